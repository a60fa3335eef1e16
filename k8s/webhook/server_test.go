package webhook

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// testServer serves ok (200) behind the bearer "b"×40 on a loopback port
// with a self-signed certificate; it returns the address and the client's
// TLS configuration.
func testServer(t *testing.T, maxConns int) (string, *tls.Config) {
	t.Helper()
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "coffer"}, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key))
	cert := must(x509.ParseCertificate(der))
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "{}") })
	srv, err := NewServer(ok, Config{Addr: "127.0.0.1:0", Cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert},
		Bearer: []byte(strings.Repeat("b", 40)), MaxConns: maxConns, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	l, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.srv.Close() })
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return l.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
}

// handshake dials addr and completes a TLS handshake within d.
func handshake(addr string, tc *tls.Config, d time.Duration) (*tls.Conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	tlsConn := tls.Client(c, tc)
	tlsConn.SetDeadline(time.Now().Add(d))
	if err := tlsConn.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	tlsConn.SetDeadline(time.Time{})
	return tlsConn, nil
}

// TestConnectionCap: at most MaxConns connections are served at once; the
// next waits (its handshake does not start) until one closes.
func TestConnectionCap(t *testing.T) {
	const limit = 2
	addr, tc := testServer(t, limit)
	var open []*tls.Conn
	for i := 0; i < limit; i++ {
		c, err := handshake(addr, tc, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer c.Close()
		open = append(open, c)
	}
	for i := 0; i < 3; i++ {
		if c, err := handshake(addr, tc, 300*time.Millisecond); err == nil {
			c.Close()
			t.Fatalf("connection %d beyond the cap of %d was served", limit+i, limit)
		} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			t.Fatalf("connection beyond the cap: %v, want a timeout", err)
		}
	}
	open[0].Close()
	c, err := handshake(addr, tc, 5*time.Second)
	if err != nil {
		t.Fatalf("after one closed: %v", err)
	}
	c.Close()
}

// TestHandshakeDeadline: a peer that connects and says nothing is
// disconnected after the handshake timeout, freeing its slot.
func TestHandshakeDeadline(t *testing.T) {
	defer func(d time.Duration) { handshakeTimeout = d }(handshakeTimeout)
	handshakeTimeout = 300 * time.Millisecond
	addr, _ := testServer(t, 1)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, err = c.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("a silent peer kept its connection for 5s")
	}
	if err == nil || time.Since(start) > 3*time.Second {
		t.Fatalf("read %v after %v", err, time.Since(start))
	}
}

// Test401ClosesTheConnection: an answer of 401 (no or a wrong bearer)
// says Connection: close and closes; a good request keeps the connection.
func Test401ClosesTheConnection(t *testing.T) {
	addr, tc := testServer(t, 4)
	c, err := handshake(addr, tc, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	do := func(bearer string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "https://"+addr+TokenReviewPath, strings.NewReader("{}"))
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		if err := req.Write(c); err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(br, req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res
	}
	if res := do(strings.Repeat("b", 40)); res.StatusCode != 200 || res.Close {
		t.Fatalf("good bearer: %d, close %v", res.StatusCode, res.Close)
	}
	if res := do("wrong"); res.StatusCode != 401 || !res.Close {
		t.Fatalf("wrong bearer: %d, close %v", res.StatusCode, res.Close)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("after a 401 the connection is open: %v", err)
	}
}

// testCA is a CA and a client certificate it issued.
type testCA struct {
	pool   *x509.CertPool
	client tls.Certificate
}

func newTestCA(t *testing.T, name string) testCA {
	t.Helper()
	caKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caCert := must(x509.ParseCertificate(must(x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey))))
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey))
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return testCA{pool: pool, client: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
}

// TestReload: after a Reload the new bearer and the new client CA are
// required (the old ones refused) without a restart, and the way the
// apiserver authenticates cannot be changed by one.
func TestReload(t *testing.T) {
	oldCA, newCA := newTestCA(t, "old"), newTestCA(t, "new")
	oldBearer, newBearer := []byte(strings.Repeat("o", 40)), []byte(strings.Repeat("n", 40))
	srv, l, roots := caServer(t, oldCA, oldBearer)
	status := func(ca testCA, bearer []byte) (int, error) {
		t.Helper()
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{ca.client}}, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest(http.MethodPost, "https://"+l.Addr().String()+TokenReviewPath, strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer "+string(bearer))
		res, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			return 0, err
		}
		res.Body.Close()
		return res.StatusCode, nil
	}
	if code, err := status(oldCA, oldBearer); err != nil || code != 200 {
		t.Fatalf("before the reload: %d %v", code, err)
	}
	if code, err := status(newCA, oldBearer); err == nil {
		t.Fatalf("a certificate of the new CA before the reload: %d", code)
	}

	if err := srv.Reload(newBearer, newCA.pool); err != nil {
		t.Fatal(err)
	}
	if code, err := status(newCA, newBearer); err != nil || code != 200 {
		t.Fatalf("after the reload: %d %v", code, err)
	}
	if code, err := status(newCA, oldBearer); err != nil || code != 401 {
		t.Fatalf("the old bearer after the reload: %d %v, want 401", code, err)
	}
	if code, err := status(oldCA, newBearer); err == nil {
		t.Fatalf("a certificate of the old CA after the reload: %d", code)
	}

	for _, tc := range []struct {
		bearer []byte
		cas    *x509.CertPool
	}{{nil, newCA.pool}, {newBearer, nil}} {
		if err := srv.Reload(tc.bearer, tc.cas); err == nil || !strings.Contains(err.Error(), "keep the authentication they started with") {
			t.Errorf("a reload dropping a way of authenticating: %v", err)
		}
	}
	if code, err := status(newCA, newBearer); err != nil || code != 200 {
		t.Fatalf("after the refused reloads: %d %v", code, err)
	}
}

// TestReloadEndsResumption: a TLS session opened with a client
// certificate of a CA that a reload dropped must not be resumed (a session
// ticket from before the reload would skip the new CA check).
func TestReloadEndsResumption(t *testing.T) {
	oldCA, newCA := newTestCA(t, "old"), newTestCA(t, "new")
	bearer := []byte(strings.Repeat("b", 40))
	srv, l, roots := caServer(t, oldCA, bearer)
	cache := tls.NewLRUClientSessionCache(8)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		get := func() (int, bool, error) {
			t.Helper()
			var resumed bool
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{oldCA.client},
				ClientSessionCache: cache, MinVersion: v, MaxVersion: v}, DisableKeepAlives: true}
			defer tr.CloseIdleConnections()
			req, _ := http.NewRequest(http.MethodPost, "https://"+l.Addr().String()+TokenReviewPath, strings.NewReader("{}"))
			req.Header.Set("Authorization", "Bearer "+string(bearer))
			res, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
			if err != nil {
				return 0, false, err
			}
			resumed = res.TLS != nil && res.TLS.DidResume
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			return res.StatusCode, resumed, nil
		}
		if code, _, err := get(); err != nil || code != 200 {
			t.Fatalf("tls %x before the reload: %d %v", v, code, err)
		}
		if code, resumed, err := get(); err != nil || code != 200 || !resumed {
			t.Fatalf("tls %x: the session is not resumed before the reload: %d %v %v", v, code, resumed, err)
		}
		if err := srv.Reload(bearer, newCA.pool); err != nil {
			t.Fatal(err)
		}
		if code, resumed, err := get(); err == nil {
			t.Fatalf("tls %x: a client certificate of the dropped CA after the reload: %d (resumed %v)", v, code, resumed)
		}
		if err := srv.Reload(bearer, oldCA.pool); err != nil {
			t.Fatal(err)
		}
	}
}

// caServer serves ok (200) on a loopback port to clients with a
// certificate of ca and bearer; it returns the server, its listener and
// the roots that verify its self-signed certificate.
func caServer(t *testing.T, ca testCA, bearer []byte) (*Server, net.Listener, *x509.CertPool) {
	t.Helper()
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "coffer"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key))
	cert := must(x509.ParseCertificate(der))
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "{}") })
	srv, err := NewServer(ok, Config{Addr: "127.0.0.1:0", Cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert},
		ClientCAs: ca.pool, Bearer: bearer, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	l, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.srv.Close() })
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return srv, l, roots
}
