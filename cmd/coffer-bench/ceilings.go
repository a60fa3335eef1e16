package main

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coffer-hsm/coffer/hsm"
	"github.com/dgraph-io/badger/v4"

	"github.com/coffer-hsm/coffer/kv"
)

// Ceilings: what the machine allows for each resource a request passes
// through, measured in-process with the same load generator as the
// scenarios. A scenario's ceiling is the lowest of those it names.
const (
	ceilHTTP    = "http"
	ceilHSMSeal = "hsm-seal"
	ceilHSMOpen = "hsm-open"
	ceilHSMSign = "hsm-sign"
	ceilKVSync  = "kv-sync"
	ceilHTTPS   = "https"
)

// ceilingBody is the fixed 60-byte JSON body of the http ceiling.
const ceilingBody = `{"status":"ok","version":"bench","uptime_seconds":123456789}`

// sealPayloadSize is the payload size of secret scenarios and of the HSM
// seal/open ceilings.
const sealPayloadSize = 256

// ceilingDef is one ceiling: how to set it up once per run.
type ceilingDef struct {
	name string
	what string
}

var ceilingDefs = []ceilingDef{
	{ceilHTTP, "net/http on a Unix socket, fixed 60-byte JSON body"},
	{ceilHSMSeal, "hsm.Seal of 256 bytes (one HSM AES-GCM wrap)"},
	{ceilHSMOpen, "hsm.Unseal of 256 bytes (one HSM AES-GCM unwrap)"},
	{ceilHSMSign, "hsm.Sign of a 32-byte digest (EC P-256 in the HSM)"},
	{ceilKVSync, "kv.Update writing one small record, SyncWrites"},
	{ceilHTTPS, "net/http over TLS on loopback TCP (key in the HSM), keep-alive, fixed 60-byte JSON body"},
}

// ceilings holds what the ceilings need for the whole run.
type ceilings struct {
	httpSocket string
	httpSrv    *http.Server
	httpsBase  string      // the https ceiling: https://127.0.0.1:PORT
	httpsTLS   *tls.Config // its clients' configuration
	httpsSrv   *http.Server
	keys       *hsm.HSM
	db         *badger.DB // raw Badger on the daemon's settings: the kv-sync ceiling
	sealed     *hsm.Sealed
	aad        []byte
	nextID     atomic.Int64
}

// openCeilings starts the http ceiling server and opens a dev HSM token and
// a Badger store of the bench's own under dir. It must run before anything
// else in this process loads the PKCS#11 module: PrepareDevToken sets
// SOFTHSM2_CONF, which SoftHSM reads once.
func openCeilings(ctx context.Context, dir string) (_ *ceilings, err error) {
	c := &ceilings{}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	cfg, err := hsm.PrepareDevToken(ctx, filepath.Join(dir, "hsm"), hsm.DefaultModulePath, "bench")
	if err != nil {
		return nil, err
	}
	// MaxSessions stays at its default: the daemon opens its token the
	// same way.
	if c.keys, err = hsm.Open(ctx, cfg); err != nil {
		return nil, err
	}
	c.aad = []byte("bench-project/bench-secret/1")
	if c.sealed, err = c.keys.Seal(ctx, payload(sealPayloadSize), c.aad); err != nil {
		return nil, err
	}
	// Raw Badger commits (one small record each, synced), on the settings
	// and encryption of the daemon's store: what the disk and Badger allow,
	// before coffer's own store layer (group commit included).
	storeKey := make([]byte, 32)
	if _, err := crand.Read(storeKey); err != nil {
		return nil, err
	}
	bopts := kv.BadgerOptions(filepath.Join(dir, "kv"), slog.New(slog.NewTextHandler(io.Discard, nil))).
		WithEncryptionKey(storeKey).WithEncryptionKeyRotationDuration(7 * 24 * time.Hour)
	if c.db, err = badger.Open(bopts); err != nil {
		return nil, err
	}

	c.httpSocket = filepath.Join(dir, "http.sock")
	l, err := net.Listen("unix", c.httpSocket)
	if err != nil {
		return nil, fmt.Errorf("http ceiling: %w", err)
	}
	body := []byte(ceilingBody)
	c.httpSrv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			h := w.Header()
			h.Set("Content-Type", "application/json")
			h.Set("Content-Length", strconv.Itoa(len(body)))
			_, _ = w.Write(body)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	go func() { _ = c.httpSrv.Serve(l) }()
	if err := c.startHTTPS(ctx, body); err != nil {
		return nil, err
	}
	return c, nil
}

// startHTTPS starts the https ceiling: the same fixed answer over TLS on
// loopback TCP, its key a TLS key in the HSM with a self-signed
// certificate, as the Kubernetes webhooks' listener has.
func (c *ceilings) startHTTPS(ctx context.Context, body []byte) error {
	key, err := c.keys.TLSKey(ctx, "bench-tls")
	if err != nil {
		return fmt.Errorf("https ceiling: %w", err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("https ceiling: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("https ceiling: %w", err)
	}
	srvTLS := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"},
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}}
	c.httpsSrv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			h := w.Header()
			h.Set("Content-Type", "application/json")
			h.Set("Content-Length", strconv.Itoa(len(body)))
			_, _ = w.Write(body)
		}),
		TLSConfig:         srvTLS,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	go func() { _ = c.httpsSrv.Serve(tls.NewListener(l, srvTLS)) }()
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	c.httpsBase, c.httpsTLS = "https://"+l.Addr().String(), &tls.Config{RootCAs: pool}
	return nil
}

func (c *ceilings) close() {
	if c.httpSrv != nil {
		_ = c.httpSrv.Close()
	}
	if c.httpsSrv != nil {
		_ = c.httpsSrv.Close()
	}
	if c.db != nil {
		_ = c.db.Close()
	}
	if c.keys != nil {
		_ = c.keys.Close()
	}
}

// benchRecord is the small record of the kv-sync ceiling.
type benchRecord struct {
	Name    string    `json:"name"`
	N       int64     `json:"n"`
	Created time.Time `json:"created"`
}

// factory returns the worker factory of ceiling name.
func (c *ceilings) factory(name string) (workerFactory, error) {
	switch name {
	case ceilHTTP:
		return httpFactory(c.httpSocket, func(int, *rand.Rand) request {
			return request{method: http.MethodGet, path: "/ceiling"}
		}), nil
	case ceilHSMSeal:
		p := payload(sealPayloadSize)
		return funcFactory(func(ctx context.Context, _ *rand.Rand) error {
			_, err := c.keys.Seal(ctx, p, c.aad)
			return err
		}), nil
	case ceilHSMOpen:
		return funcFactory(func(ctx context.Context, _ *rand.Rand) error {
			plain, err := c.keys.Unseal(ctx, c.sealed, c.aad)
			clear(plain)
			return err
		}), nil
	case ceilHSMSign:
		digest := sha256.Sum256([]byte("coffer-bench"))
		return funcFactory(func(ctx context.Context, _ *rand.Rand) error {
			_, err := c.keys.Sign(ctx, digest[:])
			return err
		}), nil
	case ceilHTTPS:
		// A POST of a TokenReview's size, as the scenario sends.
		reqBody := []byte(`{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"` + strings.Repeat("x", 74) + `"}}`)
		return httpsFactory(c.httpsBase, c.httpsTLS, func(int, *rand.Rand) request {
			return request{method: http.MethodPost, path: "/ceiling", body: reqBody}
		}), nil
	case ceilKVSync:
		return funcFactory(func(ctx context.Context, _ *rand.Rand) error {
			n := c.nextID.Add(1)
			id := fmt.Sprintf("%016x", n)
			rec, err := json.Marshal(benchRecord{Name: "bench", N: n, Created: time.Now()})
			if err != nil {
				return err
			}
			return c.db.Update(func(txn *badger.Txn) error {
				return txn.Set([]byte("bench/"+id), rec)
			})
		}), nil
	}
	return nil, errors.New("unknown ceiling " + name)
}

// payload returns n deterministic non-zero bytes.
func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}
