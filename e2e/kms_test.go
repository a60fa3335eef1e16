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

	"github.com/coffer-hsm/coffer/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
	kmsapi "k8s.io/kms/apis/v2"
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

func kmsKeys(t *testing.T, d *daemonProc) map[string]api.KMSKey {
	t.Helper()
	var k api.KMSKeys
	decodeOutput(t, "json", d.mustCLI(t, "", "-o", "json", "k8s", "kms-keys").stdout, &k)
	out := map[string]api.KMSKey{}
	for _, v := range k.Keys {
		out[v.KeyID] = v
	}
	return out
}

// TestKMS: the Kubernetes KMS v2 plugin of the real daemon, over its real
// socket, on SoftHSM: encrypt and decrypt, a kill -9 right after the first
// Encrypt that loses none of its record, key rotation (a new key_id; old
// ciphertexts keep opening), remove-kek refused while the KMS may need the
// old KEK and taken with --force only, a restart that keeps everything,
// and nothing secret in the log.
func TestKMS(t *testing.T) {
	dir := workDir(t)
	d := startDaemon(t, dir)
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
	// kill -9 right after the first Encrypt, long before any flush: the
	// key id's record was written before Encrypt returned.
	d.Kill(t)
	logs := d.stderr.String()
	d = startDaemon(t, dir) // over the socket file the killed daemon left
	c = kmsClient(t, sock)

	// Rotation: the key id in Status follows. The old KEK wraps no secret
	// any more, but the KMS used it (the killed daemon's one Encrypt):
	// --force only, however quiet it is.
	d.mustCLI(t, "", "hsm", "rotate-kek")
	if st := kmsStatus(t, c); st.KeyId != "coffer-kek-2" {
		t.Fatalf("key id after rotate-kek %q", st.KeyId)
	}
	if r := d.cli(t, "", "hsm", "remove-kek", "coffer-kek-1"); r.code != 1 || !strings.Contains(r.stderr, "kubectl replace") ||
		!strings.Contains(r.stderr, "kek_in_use") || !strings.Contains(r.stderr, "restart kube-apiserver") || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("remove-kek of a KEK the KMS used before a kill -9:\n%s", r)
	}
	// The old ciphertext opens.
	for range 2 {
		if pt, err := kmsDecrypt(t, c, enc1); err != nil || !bytes.Equal(pt, seed) {
			t.Fatalf("decrypt after rotation: %v", err)
		}
	}
	enc2 := kmsEncrypt(t, c, seed)
	if enc2.KeyId != "coffer-kek-2" {
		t.Fatalf("encrypt after rotation: key id %q", enc2.KeyId)
	}
	wantError(t, d.api(t, "DELETE", "/v1/hsm/keks/coffer-kek-1", nil), http.StatusConflict, "kek_in_use")
	keys := kmsKeys(t, d)
	if k := keys["coffer-kek-1"]; k.Encrypts != 1 || k.Decrypts != 2 || k.Current || k.RetiredAt == nil || !k.NeedsForce || !k.Present {
		t.Fatalf("kms-keys coffer-kek-1: %+v", k)
	}
	if k := keys["coffer-kek-2"]; k.Encrypts != 1 || !k.Current || k.NeedsForce {
		t.Fatalf("kms-keys coffer-kek-2: %+v", k)
	}
	table := d.mustCLI(t, "", "k8s", "kms-keys").stdout
	if !strings.Contains(table, "KEY ID") || !strings.Contains(table, "REMOVE-KEK") || !strings.Contains(table, "--force only") || !strings.Contains(table, "coffer-kek-2") {
		t.Fatalf("kms-keys table:\n%s", table)
	}

	// Restart (with a stale file where the socket was): the counts and the
	// ciphertexts stay good.
	d.Stop(t)
	logs += d.stderr.String()
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("the kms socket outlived the daemon: %v", err)
	}
	makeStaleSocket(t, sock)
	d = startDaemon(t, dir)
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

	// --force (every Secret rewritten) takes the old KEK; its ciphertexts
	// go with it.
	wantError(t, d.api(t, "DELETE", "/v1/hsm/keks/coffer-kek-1", nil), http.StatusConflict, "kek_in_use")
	d.mustCLI(t, "", "hsm", "remove-kek", "--force", "coffer-kek-1")
	if _, err := kmsDecrypt(t, c, enc1); grpcstatus.Code(err) != codes.NotFound {
		t.Fatalf("decrypt under the removed KEK: %v, want NotFound", err)
	}

	// A second rotation: the same rule for coffer-kek-2.
	d.mustCLI(t, "", "hsm", "rotate-kek")
	if st := kmsStatus(t, c); st.KeyId != "coffer-kek-3" {
		t.Fatalf("key id after the second rotation %q", st.KeyId)
	}
	if r := d.cli(t, "", "hsm", "remove-kek", "coffer-kek-2"); r.code != 1 || !strings.Contains(r.stderr, "kek_in_use") {
		t.Fatalf("remove-kek coffer-kek-2:\n%s", r)
	}
	d.mustCLI(t, "", "hsm", "remove-kek", "--force", "coffer-kek-2")
	if k := kmsKeys(t, d)["coffer-kek-2"]; k.Present || k.Encrypts != 1 || k.NeedsForce {
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

// TestKMSSocketDirRefused: a KMS or signer socket in a directory other
// users can write (a sticky 1777 one, like /tmp) is refused at start:
// another uid could bind the path first and receive kube-apiserver's DEK
// seeds or signing requests.
func TestKMSSocketDirRefused(t *testing.T) {
	shared := filepath.Join(workDir(t), "shared")
	if err := os.Mkdir(shared, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	for _, flag := range []string{"--kms-socket", "--k8s-signer-socket"} {
		d := launchDaemon(t, workDir(t), "daemon", "--dev", flag, filepath.Join(shared, "k8s.sock"))
		if code := d.waitExit(t); code == 0 || !strings.Contains(d.stderr.String(), "writable by its group or by others (mode 01777)") {
			t.Fatalf("%s in a 1777 directory: exit %d\n%s", flag, code, d.stderr)
		}
		if _, err := os.Lstat(filepath.Join(shared, "k8s.sock")); !os.IsNotExist(err) {
			t.Fatalf("%s: a socket was made in the shared directory: %v", flag, err)
		}
	}
}
