package e2e

// coffer's Kubernetes integrations in front of a real kube-apiserver
// (internal/k8stest), configured as docs/k8s-kms.md and docs/k8s-signer.md
// tell a user: the KMS v2 plugin sealing Secrets in etcd, and the external
// ServiceAccount token signer. Without COFFER_K8S_BIN they skip (`make
// k8s-test` runs them).

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/internal/k8stest"
)

// kmsEtcdPrefix starts every value kube-apiserver writes through the KMS
// v2 provider coffer's encryption-config names "coffer".
const kmsEtcdPrefix = "k8s:enc:kms:v2:coffer:"

// currentKMSKeyID is the key id coffer's KMS reports now (the current
// KEK's label).
func currentKMSKeyID(t *testing.T, d *daemonProc) string {
	t.Helper()
	for id, k := range kmsKeys(t, d) {
		if k.Current {
			return id
		}
	}
	// Before any Encrypt, kms-keys may list nothing: ask Status.
	return kmsStatus(t, kmsClient(t, filepath.Join(d.stateDir, "kms.sock"))).KeyId
}

// TestK8sKMS: a real kube-apiserver with coffer's KMS v2 plugin, set up
// with the file `coffer k8s encryption-config` prints. Secrets reach etcd
// sealed (prefix, key id, no plaintext) and read back; they survive a
// restart of coffer and then of kube-apiserver; after `coffer hsm
// rotate-kek` new Secrets name the new key id while old ones still read;
// rewriting every Secret moves them all to the new key id, after which the
// old KEK can go (`remove-kek --force`) and everything still reads after
// kube-apiserver starts cold again.
func TestK8sKMS(t *testing.T) {
	k8stest.Bin(t)
	begin := time.Now()
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(begin).Seconds(), what) }

	dir := workDir(t)
	d := startDaemon(t, dir)
	sock := filepath.Join(d.stateDir, "kms.sock")
	// As docs/k8s-kms.md: the generated file is kube-apiserver's
	// --encryption-provider-config.
	gen := runCLI(t, "", "", "k8s", "encryption-config", "--kms-socket", sock)
	if gen.code != 0 {
		t.Fatalf("encryption-config:\n%s", gen)
	}
	encCfg := filepath.Join(t.TempDir(), "coffer.yaml")
	if err := os.WriteFile(encCfg, []byte(gen.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	cp := k8stest.Start(t, k8stest.Options{EncryptionProviderConfig: encCfg})
	step("coffer and kube-apiserver up")

	key1 := currentKMSKeyID(t, d)
	if key1 != "coffer-kek-1" {
		t.Fatalf("a fresh daemon's KMS key id is %q, want coffer-kek-1", key1)
	}

	type obj struct{ ns, name, value string }
	secrets := []obj{
		{"coffer-kms", "db", "kms-e2e-before-rotation-value"},
		{"default", "api", "kms-e2e-default-ns-value"},
	}
	cp.Kubectl(t, "create", "namespace", "coffer-kms")
	create := func(o obj) {
		t.Helper()
		cp.Kubectl(t, "--namespace="+o.ns, "create", "secret", "generic", o.name, "--from-literal=password="+o.value)
	}
	read := func(o obj, when string) {
		t.Helper()
		got := cp.Kubectl(t, "--namespace="+o.ns, "get", "secret", o.name, "--output=jsonpath={.data.password}")
		if b, err := base64.StdEncoding.DecodeString(got); err != nil || string(b) != o.value {
			t.Fatalf("%s: kubectl get secret %s/%s does not give back the value it was created with (%v)", when, o.ns, o.name, err)
		}
	}
	readAll := func(when string) {
		t.Helper()
		for _, o := range secrets {
			read(o, when)
		}
	}
	// sealed checks o's etcd value: KMS v2 by coffer, under keyID (named
	// in the stored EncryptedObject), not under notKeyID, no plaintext.
	sealed := func(o obj, keyID, notKeyID, when string) {
		t.Helper()
		key := "/registry/secrets/" + o.ns + "/" + o.name
		raw := cp.EtcdGet(t, key)
		switch {
		case raw == nil:
			t.Fatalf("%s: etcd has nothing under %s", when, key)
		case !bytes.HasPrefix(raw, []byte(kmsEtcdPrefix)):
			t.Fatalf("%s: etcd %s starts with %q, want %q", when, key, raw[:min(len(raw), len(kmsEtcdPrefix))], kmsEtcdPrefix)
		case bytes.Contains(raw, []byte(o.value)) || bytes.Contains(raw, []byte(base64.StdEncoding.EncodeToString([]byte(o.value)))):
			t.Fatalf("%s: etcd %s holds the Secret's value in clear", when, key)
		case !bytes.Contains(raw, []byte(keyID)):
			t.Fatalf("%s: etcd %s does not name key id %s", when, key, keyID)
		case notKeyID != "" && bytes.Contains(raw, []byte(notKeyID)):
			t.Fatalf("%s: etcd %s still names key id %s", when, key, notKeyID)
		}
	}

	for _, o := range secrets {
		create(o)
		sealed(o, key1, "", "after create")
	}
	readAll("after create")
	k := kmsKeys(t, d)[key1]
	if k.Encrypts < 1 {
		t.Fatalf("kms-keys %s after kube-apiserver wrote Secrets: %+v, want an Encrypt counted", key1, k)
	}
	step("secrets created, sealed under " + key1)

	// coffer restarts on its state; then kube-apiserver starts with no
	// DEK cached, so reading asks coffer to Decrypt.
	d.Stop(t)
	d = startDaemon(t, dir)
	decBefore := kmsKeys(t, d)[key1].Decrypts
	cp.Restart(t)
	readAll("after restarting coffer, then kube-apiserver")
	if k := kmsKeys(t, d)[key1]; k.Decrypts <= decBefore {
		t.Fatalf("kube-apiserver read Secrets after a restart without a Decrypt under %s counted: %+v", key1, k)
	}
	step("coffer and kube-apiserver restarted; secrets read back")

	// Rotation: a new KEK, a new key id; kube-apiserver restarted sees it
	// at its first Status (without the restart, within its ~1 min poll).
	d.mustCLI(t, "", "hsm", "rotate-kek")
	key2 := currentKMSKeyID(t, d)
	if key2 == key1 || key2 == "" {
		t.Fatalf("key id after rotate-kek %q (was %q)", key2, key1)
	}
	cp.Restart(t)
	newer := obj{"coffer-kms", "after-rotation", "kms-e2e-after-rotation-value"}
	create(newer)
	sealed(newer, key2, key1, "a Secret created after the rotation")
	for _, o := range secrets {
		sealed(o, key1, "", "an old Secret before the rewrite")
	}
	secrets = append(secrets, newer)
	readAll("after the rotation, before the rewrite")
	step("rotated to " + key2 + "; new Secret under it, old ones still read")

	// Rewrite every Secret, as the docs say; each lands under key2.
	list := cp.Kubectl(t, "get", "secrets", "--all-namespaces", "--output=json")
	if r := cp.RunKubectl(t, "", list, "replace", "-f", "-"); r.Code != 0 {
		t.Fatalf("kubectl replace of every Secret: exit %d\n%s", r.Code, r.Stderr)
	}
	var all struct {
		Items []struct {
			Metadata struct{ Namespace, Name string }
		}
	}
	if err := json.Unmarshal([]byte(list), &all); err != nil {
		t.Fatal(err)
	}
	if len(all.Items) < len(secrets) {
		t.Fatalf("kubectl get secrets -A lists %d, want at least %d", len(all.Items), len(secrets))
	}
	for _, it := range all.Items {
		key := "/registry/secrets/" + it.Metadata.Namespace + "/" + it.Metadata.Name
		raw := cp.EtcdGet(t, key)
		if !bytes.HasPrefix(raw, []byte(kmsEtcdPrefix)) || !bytes.Contains(raw, []byte(key2)) || bytes.Contains(raw, []byte(key1)) {
			t.Fatalf("after the rewrite etcd %s is not sealed under %s alone", key, key2)
		}
	}
	for _, o := range secrets {
		sealed(o, key2, key1, "after the rewrite")
	}
	step("every Secret rewritten under " + key2)

	// The old KEK goes. Without --force coffer refuses (the KMS used it
	// within the grace); with --force, after the rewrite, it is removed.
	if r := d.cli(t, "", "hsm", "remove-kek", key1); r.code == 0 {
		t.Fatalf("remove-kek %s without --force right after the KMS used it succeeded:\n%s", key1, r)
	} else {
		t.Logf("remove-kek %s without --force: exit %d: %s", key1, r.code, strings.TrimSpace(r.stderr))
	}
	d.mustCLI(t, "", "hsm", "remove-kek", "--force", key1)
	if k := kmsKeys(t, d)[key1]; k.Present {
		t.Fatalf("kms-keys %s after remove-kek --force: %+v, want it gone from the token", key1, k)
	}
	decOld := kmsKeys(t, d)[key1].Decrypts
	cp.Restart(t)
	readAll("after removing the old KEK and restarting kube-apiserver")
	if r := cp.RunKubectl(t, "", "", "get", "secrets", "--all-namespaces"); r.Code != 0 {
		t.Fatalf("listing every Secret after removing %s:\n%s", key1, r)
	}
	if k := kmsKeys(t, d)[key1]; k.Decrypts != decOld {
		t.Fatalf("kube-apiserver asked for a Decrypt under the removed %s: %+v", key1, k)
	}
	step("old KEK " + key1 + " removed; every Secret reads after a cold kube-apiserver")
	for id, k := range kmsKeys(t, d) {
		t.Logf("kms-keys %s: current %v, present %v, encrypts %d, decrypts %d", id, k.Current, k.Present, k.Encrypts, k.Decrypts)
	}

	// kube-apiserver's log holds no Secret value either.
	logs := cp.APIServerLog() + d.stderr.String()
	for _, o := range secrets {
		if strings.Contains(logs, o.value) {
			t.Fatalf("a log holds the value of %s/%s", o.ns, o.name)
		}
	}
}

// TestK8sServiceAccountSigner: a real kube-apiserver whose
// --service-account-signing-endpoint is coffer's signer socket (as
// docs/k8s-signer.md sets it up). `kubectl create token` returns a token
// whose kid is coffer's current SA key, whose signature verifies against
// both coffer's published key and kube-apiserver's /openid/v1/jwks, and
// which kube-apiserver accepts as a bearer token; after `coffer k8s
// rotate-sa-key` new tokens carry the new kid and both old and new
// tokens authenticate. (That the key's private half is sensitive and not
// extractable is hsm/k8skey_test.go's checkNonExtractable, on SoftHSM.)
func TestK8sServiceAccountSigner(t *testing.T) {
	k8stest.Bin(t)
	begin := time.Now()
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(begin).Seconds(), what) }

	d := startDaemon(t, workDir(t))
	sock := filepath.Join(d.stateDir, "k8s-signer.sock")
	cp := k8stest.Start(t, k8stest.Options{ServiceAccountSigningEndpoint: sock})
	step("coffer and kube-apiserver (signing through coffer) up")

	saKeys := func() map[string]api.K8sSAKey {
		t.Helper()
		var list api.K8sSAKeys
		if err := json.Unmarshal([]byte(d.mustCLI(t, "", "-o", "json", "k8s", "sa-keys").stdout), &list); err != nil {
			t.Fatal(err)
		}
		out := map[string]api.K8sSAKey{}
		for _, k := range list.Keys {
			out[k.Kid] = k
		}
		return out
	}
	signer := k8sSigner(t, sock)
	const sa = "system:serviceaccount:default:sa"
	// check verifies tok against coffer's keys (FetchKeys, as
	// kube-apiserver fetches them) and kube-apiserver's published JWKS,
	// checks its issuer and subject, and returns its kid.
	check := func(tok, when string) string {
		t.Helper()
		kid := k8sVerify(t, k8sKeys(t, signer), tok)
		jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256, jose.RS256})
		if err != nil {
			t.Fatalf("%s: the token does not parse as a JWS: %v", when, err)
		}
		var jwks jose.JSONWebKeySet
		if err := json.Unmarshal([]byte(cp.Kubectl(t, "get", "--raw", "/openid/v1/jwks")), &jwks); err != nil {
			t.Fatalf("%s: /openid/v1/jwks: %v", when, err)
		}
		pub := jwks.Key(kid)
		if len(pub) != 1 {
			t.Fatalf("%s: kube-apiserver's /openid/v1/jwks has %d keys with kid %s", when, len(pub), kid)
		}
		payload, err := jws.Verify(pub[0].Key)
		if err != nil {
			t.Fatalf("%s: the token does not verify against kube-apiserver's JWKS key %s: %v", when, kid, err)
		}
		var claims struct {
			Iss string `json:"iss"`
			Sub string `json:"sub"`
		}
		if err := json.Unmarshal(payload, &claims); err != nil || claims.Iss != cp.ServiceAccountIssuer || claims.Sub != sa {
			t.Fatalf("%s: the token's iss %q and sub %q (%v), want %q and %q", when, claims.Iss, claims.Sub, err, cp.ServiceAccountIssuer, sa)
		}
		return kid
	}
	whoami := func(tok, when string) {
		t.Helper()
		r := cp.RunKubectl(t, tok, "", "auth", "whoami", "--output=jsonpath={.status.userInfo.username}")
		if r.Code != 0 || r.Stdout != sa {
			t.Fatalf("%s: kubectl --token=<the token> auth whoami: exit %d, user %q, want %q\n%s", when, r.Code, r.Stdout, sa, r.Stderr)
		}
	}

	cp.Kubectl(t, "--namespace=default", "create", "serviceaccount", "sa")
	tok1 := strings.TrimSpace(cp.Kubectl(t, "--namespace=default", "create", "token", "sa"))
	kid1 := check(tok1, "the first token")
	keys := saKeys()
	if k, ok := keys[kid1]; !ok || !k.Current || k.Signed < 1 || len(keys) != 1 {
		t.Fatalf("coffer k8s sa-keys %+v; want kid %s alone, current, with a signature counted", keys, kid1)
	}
	whoami(tok1, "the first token")
	step("token signed by " + keys[kid1].Label + " (kid " + kid1 + "), verified, accepted as a bearer")

	// Rotation: new tokens carry the new kid; the old one still works.
	var rot api.K8sSAKeyRotation
	if err := json.Unmarshal([]byte(d.mustCLI(t, "", "-o", "json", "k8s", "rotate-sa-key").stdout), &rot); err != nil {
		t.Fatal(err)
	}
	kid2 := rot.Current.Kid
	if kid2 == kid1 || rot.Previous == nil || rot.Previous.Kid != kid1 {
		t.Fatalf("rotate-sa-key = %+v", rot)
	}
	tok2 := strings.TrimSpace(cp.Kubectl(t, "--namespace=default", "create", "token", "sa"))
	whoami(tok2, "a token signed after the rotation")
	if kid := check(tok2, "a token signed after the rotation"); kid != kid2 {
		t.Fatalf("a token signed after the rotation has kid %s, want the new %s", kid, kid2)
	}
	whoami(tok1, "the first token, after the rotation")
	check(tok1, "the first token, after the rotation")
	if k := saKeys()[kid2]; k.Signed < 1 || !k.Current {
		t.Fatalf("sa-keys of the new key: %+v", k)
	}
	step("rotated to " + rot.Current.Label + " (kid " + kid2 + "); new token carries it, both tokens authenticate")

	// Neither token reached a log.
	logs := cp.APIServerLog() + d.stderr.String()
	for _, tok := range []string{tok1, tok2} {
		if strings.Contains(logs, strings.Split(tok, ".")[2]) {
			t.Fatal("a log holds a token's signature")
		}
	}
	// Both signing keys are in the token and cannot leave it.
	d.Stop(t)
	for _, label := range []string{keys[kid1].Label, rot.Current.Label} {
		checkKeyInToken(t, filepath.Join(d.stateDir, "hsm"), label)
	}
	step("both keys sensitive and not extractable in the token")
}
