package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	externaljwtv1 "k8s.io/externaljwt/apis/v1"
)

// k8sSignerSocket is the Kubernetes signer socket of a dev daemon whose
// API socket is socket (both in its state directory).
func k8sSignerSocket(socket string) string {
	return filepath.Join(filepath.Dir(socket), "k8s-signer.sock")
}

// prepareK8sSign returns workers that share one gRPC connection to the
// daemon's Kubernetes signer socket (on by default in --dev), as
// kube-apiserver does, and call Sign with claims like a projected
// ServiceAccount token's (1 h).
func prepareK8sSign(_ context.Context, e *env) (workerFactory, error) {
	shared := newGRPCShared(func() string { return "unix://" + k8sSignerSocket(e.socket) }, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("localhost"))
	return func(int) (opFunc, func(), error) {
		conn, release, err := shared.get()
		if err != nil {
			return nil, nil, err
		}
		c := externaljwtv1.NewExternalJWTSignerClient(conn)
		now := time.Now()
		b, err := json.Marshal(map[string]any{
			"aud": []string{"https://kubernetes.default.svc.cluster.local"}, "iss": "https://kubernetes.default.svc.cluster.local",
			"sub": "system:serviceaccount:bench:app", "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
			"jti": "6f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b",
			"kubernetes.io": map[string]any{
				"namespace":      "bench",
				"node":           map[string]string{"name": "node-1", "uid": "0f9e8d7c-6b5a-4938-8271-6a5b4c3d2e1f"},
				"pod":            map[string]string{"name": "app-7d9f8c6b5-x2k4q", "uid": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"},
				"serviceaccount": map[string]string{"name": "app", "uid": "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e"},
			},
		})
		if err != nil {
			release()
			return nil, nil, err
		}
		req := &externaljwtv1.SignJWTRequest{Claims: base64.RawURLEncoding.EncodeToString(b)}
		return func(ctx context.Context, _ *rand.Rand) error {
			r, err := c.Sign(ctx, req)
			if err != nil {
				return err
			}
			if r.Header == "" || r.Signature == "" {
				return errors.New("k8s-sign: empty header or signature")
			}
			return nil
		}, release, nil
	}, nil
}
