package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
	kmsapi "k8s.io/kms/apis/v2"

	"github.com/coffer-hsm/coffer/unixapi"
)

// kmsClient dials the daemon's KMS socket as kube-apiserver does.
func kmsClient(t *testing.T, socket string) kmsapi.KeyManagementServiceClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return kmsapi.NewKeyManagementServiceClient(conn)
}

func kmsStatus(t *testing.T, c kmsapi.KeyManagementServiceClient) *kmsapi.StatusResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.Status(ctx, &kmsapi.StatusRequest{})
	if err != nil {
		t.Fatalf("kms status: %v", err)
	}
	if st.Version != "v2" || st.Healthz != "ok" {
		t.Fatalf("kms status %+v", st)
	}
	return st
}

func kmsDecrypt(t *testing.T, c kmsapi.KeyManagementServiceClient, enc *kmsapi.EncryptResponse) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: enc.KeyId, Annotations: enc.Annotations, Uid: "e2e"})
	if err != nil {
		return nil, err
	}
	return r.Plaintext, nil
}

func kmsEncrypt(t *testing.T, c kmsapi.KeyManagementServiceClient, seed []byte) *kmsapi.EncryptResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	enc, err := c.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: seed, Uid: "e2e"})
	if err != nil {
		t.Fatalf("kms encrypt: %v", err)
	}
	return enc
}

func kmsKeys(t *testing.T, d *daemonProc) map[string]unixapi.KMSKey {
	t.Helper()
	var k unixapi.KMSKeys
	decodeOutput(t, "json", d.mustCLI(t, "", "-o", "json", "k8s", "kms-keys").stdout, &k)
	out := map[string]unixapi.KMSKey{}
	for _, v := range k.Keys {
		out[v.KeyID] = v
	}
	return out
}

// TestKMS: the Kubernetes KMS v2 plugin of the real daemon, over its real
// socket, on SoftHSM: encrypt and decrypt, key rotation (a new key_id; old
// ciphertexts keep opening), remove-kek refused while the KMS may need the
// old KEK and taken once the grace is over or with --force, a restart that
// keeps everything, and nothing secret in the log.
func TestKMS(t *testing.T) {
	dir := workDir(t)
	const grace = 5 * time.Second
	d := startDaemon(t, dir, "--kms-remove-grace", grace.String())
	sock := filepath.Join(d.stateDir, "kms.sock")
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("kms socket mode %v, want a socket with 0600", fi.Mode())
	}
	c := kmsClient(t, sock)
	if st := kmsStatus(t, c); st.KeyId != "coffer-kek-1" {
		t.Fatalf("key id %q", st.KeyId)
	}

	seed := make([]byte, 32)
	rand.Read(seed)
	enc1 := kmsEncrypt(t, c, seed)
	if enc1.KeyId != "coffer-kek-1" || bytes.Contains(enc1.Ciphertext, seed) || len(enc1.Ciphertext) > 1024 {
		t.Fatalf("encrypt: key id %q, %d bytes", enc1.KeyId, len(enc1.Ciphertext))
	}
	if pt, err := kmsDecrypt(t, c, enc1); err != nil || !bytes.Equal(pt, seed) {
		t.Fatalf("decrypt: %v", err)
	}

	// Rotation: the key id in Status follows; the old ciphertext opens.
	d.mustCLI(t, "", "hsm", "rotate-kek")
	if st := kmsStatus(t, c); st.KeyId != "coffer-kek-2" {
		t.Fatalf("key id after rotate-kek %q", st.KeyId)
	}
	if pt, err := kmsDecrypt(t, c, enc1); err != nil || !bytes.Equal(pt, seed) {
		t.Fatalf("decrypt after rotation: %v", err)
	}
	enc2 := kmsEncrypt(t, c, seed)
	if enc2.KeyId != "coffer-kek-2" {
		t.Fatalf("encrypt after rotation: key id %q", enc2.KeyId)
	}

	// The old KEK wraps no secret any more, but the KMS may need it.
	if r := d.cli(t, "", "hsm", "remove-kek", "coffer-kek-1"); r.code != 1 || !strings.Contains(r.stderr, "kubectl replace") || !strings.Contains(r.stderr, "kek_in_use") {
		t.Fatalf("remove-kek of a KEK the KMS used:\n%s", r)
	}
	wantError(t, d.api(t, "DELETE", "/v1/hsm/keks/coffer-kek-1", nil), http.StatusConflict, "kek_in_use")
	keys := kmsKeys(t, d)
	if k := keys["coffer-kek-1"]; k.Encrypts != 1 || k.Decrypts != 2 || k.Current || k.RetiredAt == nil || k.RemovableAt == nil || !k.Present {
		t.Fatalf("kms-keys coffer-kek-1: %+v", k)
	}
	if k := keys["coffer-kek-2"]; k.Encrypts != 1 || !k.Current || k.RemovableAt != nil {
		t.Fatalf("kms-keys coffer-kek-2: %+v", k)
	}
	table := d.mustCLI(t, "", "k8s", "kms-keys").stdout
	if !strings.Contains(table, "KEY ID") || !strings.Contains(table, "coffer-kek-2") {
		t.Fatalf("kms-keys table:\n%s", table)
	}

	// Restart (with a stale file where the socket was): the counts and the
	// ciphertexts stay good.
	d.Stop(t)
	logs := d.stderr.String()
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("the kms socket outlived the daemon: %v", err)
	}
	makeStaleSocket(t, sock)
	d = startDaemon(t, dir, "--kms-remove-grace", grace.String())
	c = kmsClient(t, sock)
	if st := kmsStatus(t, c); st.KeyId != "coffer-kek-2" {
		t.Fatalf("key id after restart %q", st.KeyId)
	}
	for _, e := range []*kmsapi.EncryptResponse{enc1, enc2} {
		if pt, err := kmsDecrypt(t, c, e); err != nil || !bytes.Equal(pt, seed) {
			t.Fatalf("decrypt under %s after restart: %v", e.KeyId, err)
		}
	}
	keys = kmsKeys(t, d)
	if k := keys["coffer-kek-1"]; k.Encrypts != 1 || k.Decrypts < 3 {
		t.Fatalf("kms-keys coffer-kek-1 after restart: %+v", k)
	}

	// Another daemon on the same KMS socket is refused.
	other := launchDaemon(t, workDir(t), "daemon", "--dev", "--kms-socket", sock)
	if code := other.waitExit(t); code == 0 || !strings.Contains(other.stderr.String(), "another coffer daemon is already serving") {
		t.Fatalf("a second daemon on the kms socket: exit %d\n%s", code, other.stderr)
	}
	if st := kmsStatus(t, c); st.KeyId != "coffer-kek-2" {
		t.Fatal("the first daemon lost its socket")
	}

	// A Decrypt under the old key id starts its grace again; once unused
	// for the grace, the old KEK goes without --force.
	if _, err := kmsDecrypt(t, c, enc1); err != nil {
		t.Fatal(err)
	}
	wantError(t, d.api(t, "DELETE", "/v1/hsm/keks/coffer-kek-1", nil), http.StatusConflict, "kek_in_use")
	time.Sleep(grace + 500*time.Millisecond)
	d.mustCLI(t, "", "hsm", "remove-kek", "coffer-kek-1")
	if _, err := kmsDecrypt(t, c, enc1); grpcstatus.Code(err) != codes.NotFound {
		t.Fatalf("decrypt under the removed KEK: %v, want NotFound", err)
	}

	// A second rotation, and --force takes the KEK at once.
	d.mustCLI(t, "", "hsm", "rotate-kek")
	if st := kmsStatus(t, c); st.KeyId != "coffer-kek-3" {
		t.Fatalf("key id after the second rotation %q", st.KeyId)
	}
	if r := d.cli(t, "", "hsm", "remove-kek", "coffer-kek-2"); r.code != 1 || !strings.Contains(r.stderr, "kek_in_use") {
		t.Fatalf("remove-kek coffer-kek-2:\n%s", r)
	}
	d.mustCLI(t, "", "hsm", "remove-kek", "--force", "coffer-kek-2")
	if k := kmsKeys(t, d)["coffer-kek-2"]; k.Present || k.Encrypts != 1 {
		t.Fatalf("kms-keys of a removed key: %+v", k)
	}

	// encryption-config names this socket.
	cfg := runCLI(t, "", "", "k8s", "encryption-config", "--kms-socket", sock)
	if cfg.code != 0 || !strings.Contains(cfg.stdout, "endpoint: unix://"+sock) || !strings.Contains(cfg.stdout, "apiVersion: v2") ||
		!strings.Contains(cfg.stdout, "identity: {}") || !strings.Contains(cfg.stdout, "kind: EncryptionConfiguration") {
		t.Fatalf("encryption-config:\n%s", cfg)
	}

	// Nothing secret in the daemon's log.
	logs += d.stderr.String()
	for _, s := range []string{hex.EncodeToString(seed), base64.StdEncoding.EncodeToString(seed), string(seed)} {
		if strings.Contains(logs, s) {
			t.Fatal("the daemon's log holds the plaintext seed")
		}
	}
}
