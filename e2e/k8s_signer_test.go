package e2e

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/api"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
	externaljwtv1 "k8s.io/externaljwt/apis/v1"
)

// k8sSigner dials the daemon's Kubernetes signer socket as kube-apiserver
// does (plain gRPC over the Unix socket).
func k8sSigner(t *testing.T, path string) externaljwtv1.ExternalJWTSignerClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("localhost"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return externaljwtv1.NewExternalJWTSignerClient(conn)
}

// k8sToken has the signer sign claims like kube-apiserver's and
// assembles the token as kube-apiserver does.
func k8sToken(t *testing.T, c externaljwtv1.ExternalJWTSignerClient, life time.Duration) string {
	t.Helper()
	now := time.Now()
	b, _ := json.Marshal(map[string]any{
		"aud": []string{"https://kubernetes.default.svc"}, "iss": "https://kubernetes.default.svc",
		"sub": "system:serviceaccount:default:app", "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(life).Unix(),
		"kubernetes.io": map[string]any{"namespace": "default", "serviceaccount": map[string]string{"name": "app", "uid": "0b0a4c1e-5d55-4c4f-8e0a-3f3bfa4c8d11"}},
	})
	claims := base64.RawURLEncoding.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := c.Sign(ctx, &externaljwtv1.SignJWTRequest{Claims: claims})
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return r.Header + "." + claims + "." + r.Signature
}

func k8sKeys(t *testing.T, c externaljwtv1.ExternalJWTSignerClient) *externaljwtv1.FetchKeysResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	k, err := c.FetchKeys(ctx, &externaljwtv1.FetchKeysRequest{})
	if err != nil {
		t.Fatalf("FetchKeys: %v", err)
	}
	if k.RefreshHintSeconds <= 0 || k.DataTimestamp.CheckValid() != nil || len(k.Keys) == 0 {
		t.Fatalf("FetchKeys = %v", k)
	}
	return k
}

// k8sVerify verifies tok with the key FetchKeys publishes for its kid,
// as kube-apiserver's authenticator does, and returns the kid.
func k8sVerify(t *testing.T, keys *externaljwtv1.FetchKeysResponse, tok string) string {
	t.Helper()
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256, jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	kid := jws.Signatures[0].Header.KeyID
	for _, k := range keys.Keys {
		if k.KeyId != kid {
			continue
		}
		pub, err := x509.ParsePKIXPublicKey(k.Key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := jws.Verify(pub); err != nil {
			t.Fatalf("token with kid %s does not verify: %v", kid, err)
		}
		return kid
	}
	t.Fatalf("kid %q is not published (keys %v)", kid, keys.Keys)
	return ""
}

func kids(k *externaljwtv1.FetchKeysResponse) string {
	var out []string
	for _, key := range k.Keys {
		out = append(out, key.KeyId)
	}
	return strings.Join(out, " ")
}

func TestK8sSigner(t *testing.T) {
	dir := workDir(t)
	d := startDaemon(t, dir)
	sock := filepath.Join(d.stateDir, "k8s-signer.sock")
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("signer socket: %v, mode %v; want a socket with mode 0600", err, fi.Mode())
	}
	c := k8sSigner(t, sock)
	md, err := c.Metadata(context.Background(), &externaljwtv1.MetadataRequest{})
	if err != nil || md.MaxTokenExpirationSeconds != 86400 {
		t.Fatalf("Metadata = %v, %v", md, err)
	}
	keys1 := k8sKeys(t, c)
	if len(keys1.Keys) != 1 {
		t.Fatalf("a fresh daemon publishes %d keys, want 1", len(keys1.Keys))
	}
	tok1 := k8sToken(t, c, time.Hour)
	kid1 := k8sVerify(t, keys1, tok1)
	// Not coffer's own signing key: its JWKS does not hold the kid.
	var jwks struct{ Keys []struct{ Kid string } }
	d.mustAPI(t, "GET", "/.well-known/jwks.json", nil, 200, &jwks)
	for _, k := range jwks.Keys {
		if k.Kid == kid1 {
			t.Fatal("the Kubernetes key is in coffer's JWKS")
		}
	}
	// A token longer than the maximum is refused, and nothing of it logged.
	_, err = c.Sign(context.Background(), &externaljwtv1.SignJWTRequest{Claims: strings.Split(k8sTokenClaims(t, 48*time.Hour), ".")[0]})
	if grpcstatus.Code(err) != codes.InvalidArgument {
		t.Fatalf("Sign(48h) = %v, want InvalidArgument", err)
	}

	var list api.K8sSAKeys
	if err := json.Unmarshal([]byte(d.mustCLI(t, "", "-o", "json", "k8s", "sa-keys").stdout), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Keys) != 1 || list.Keys[0].Kid != kid1 || !list.Keys[0].Current || list.Keys[0].Signed != 1 || list.Keys[0].Alg != "ES256" {
		t.Fatalf("k8s sa-keys = %+v", list)
	}

	// Rotation: the new key signs, the previous one stays published.
	var rot api.K8sSAKeyRotation
	if err := json.Unmarshal([]byte(d.mustCLI(t, "", "-o", "json", "k8s", "rotate-sa-key").stdout), &rot); err != nil {
		t.Fatal(err)
	}
	if rot.Previous == nil || rot.Previous.Kid != kid1 || !rot.Previous.Published || rot.Previous.RetireAfter == nil ||
		rot.Previous.RetireAfter.Before(time.Now().Add(24*time.Hour)) || rot.Current.Kid == kid1 {
		t.Fatalf("rotate-sa-key = %+v", rot)
	}
	keys2 := k8sKeys(t, c)
	if kids(keys2) != rot.Current.Kid+" "+kid1 {
		t.Fatalf("after rotation FetchKeys has %s, want %s %s", kids(keys2), rot.Current.Kid, kid1)
	}
	k8sVerify(t, keys2, tok1)
	tok2 := k8sToken(t, c, time.Hour)
	if kid := k8sVerify(t, keys2, tok2); kid != rot.Current.Kid {
		t.Fatalf("a token after the rotation has kid %s", kid)
	}

	// A restart keeps both keys; Stop removes the socket.
	d.Stop(t)
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("signer socket after stop: %v", err)
	}
	d = startDaemon(t, dir)
	c = k8sSigner(t, sock)
	keys3 := k8sKeys(t, c)
	if kids(keys3) != kids(keys2) {
		t.Fatalf("after restart FetchKeys has %s, want %s", kids(keys3), kids(keys2))
	}
	k8sVerify(t, keys3, tok1)
	k8sVerify(t, keys3, tok2)

	// After a crash the stale socket is replaced at the next start.
	d.Kill(t)
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("signer socket after SIGKILL: %v (want it left behind)", err)
	}
	d = startDaemon(t, dir)
	c = k8sSigner(t, sock)
	if kid := k8sVerify(t, k8sKeys(t, c), k8sToken(t, c, time.Hour)); kid != rot.Current.Kid {
		t.Fatalf("after a crash the signer signs with %s", kid)
	}
	if logs := d.stderr.String(); strings.Contains(logs, "system:serviceaccount") {
		t.Fatalf("the daemon log holds token claims:\n%s", logs)
	}
}

// k8sTokenClaims returns base64url claims with that lifetime, followed by
// a dot (for strings.Split).
func k8sTokenClaims(t *testing.T, life time.Duration) string {
	t.Helper()
	now := time.Now()
	b, _ := json.Marshal(map[string]any{"iss": "i", "sub": "system:serviceaccount:default:app", "iat": now.Unix(), "exp": now.Add(life).Unix()})
	return base64.RawURLEncoding.EncodeToString(b) + "."
}

func TestK8sSignerOff(t *testing.T) {
	dir := workDir(t)
	d := startDaemon(t, dir, "--k8s-signer-socket", "")
	if _, err := os.Lstat(filepath.Join(d.stateDir, "k8s-signer.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("signer socket with --k8s-signer-socket '': %v", err)
	}
	// Its keys can be listed (none yet) without it.
	var list api.K8sSAKeys
	if err := json.Unmarshal([]byte(d.mustCLI(t, "", "-o", "json", "k8s", "sa-keys").stdout), &list); err != nil || len(list.Keys) != 0 {
		t.Fatalf("k8s sa-keys = %+v, %v", list, err)
	}
}
