package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	kmsapi "k8s.io/kms/apis/v2"
)

// kmsSocket is the KMS v2 socket of a dev daemon whose API socket is
// socket (both in its state directory).
func kmsSocket(socket string) string { return filepath.Join(filepath.Dir(socket), "kms.sock") }

// prepareKMSDecrypt encrypts one 32-byte seed (what kube-apiserver sends)
// and returns workers that each decrypt it over their own gRPC connection
// to the daemon's KMS socket, as kube-apiserver does on a DEK cache miss
// (all on one connection, as kube-apiserver's).
func prepareKMSDecrypt(ctx context.Context, e *env) (workerFactory, error) {
	conn, err := grpc.NewClient("unix://"+kmsSocket(e.socket), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial the kms socket: %w", err)
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	enc, err := kmsapi.NewKeyManagementServiceClient(conn).Encrypt(cctx, &kmsapi.EncryptRequest{Plaintext: payload(32), Uid: "bench"})
	if err != nil {
		return nil, fmt.Errorf("kms encrypt: %w", err)
	}
	req := &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: enc.KeyId, Annotations: enc.Annotations, Uid: "bench"}
	shared := newGRPCShared(func() string { return "unix://" + kmsSocket(e.socket) }, grpc.WithTransportCredentials(insecure.NewCredentials()))
	return func(int) (opFunc, func(), error) {
		conn, release, err := shared.get()
		if err != nil {
			return nil, nil, err
		}
		c := kmsapi.NewKeyManagementServiceClient(conn)
		return func(ctx context.Context, _ *rand.Rand) error {
			r, err := c.Decrypt(ctx, req)
			if err == nil {
				clear(r.Plaintext)
			}
			return err
		}, release, nil
	}, nil
}
