//go:build !nodaemon

package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/coffer-hsm/coffer/audit"
	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/internal/memtrim"
	"github.com/coffer-hsm/coffer/metrics"
	"github.com/coffer-hsm/coffer/systemd"
	"github.com/coffer-hsm/coffer/systemd/unitctl"
	"github.com/coffer-hsm/coffer/unixapi"
)

// devStateDir is where `coffer daemon --dev` keeps everything.
const devStateDir = ".coffer"

var daemonCommand = &cli.Command{
	Name:  "daemon",
	Usage: "run the coffer daemon",
	Description: `Runs the daemon. With --dev it creates (or reuses) ./.coffer/ with its own
SoftHSM token, store and socket, and the calling user is a system admin.
Otherwise it uses the configured PKCS#11 token and state directory; the PIN
comes from --hsm-pin-file, by default $CREDENTIALS_DIRECTORY/hsm-pin.
--hsm names token, module and PIN file in one PKCS#11 URI (RFC 7512).`,
	Flags: []cli.Flag{
		&cli.BoolFlag{Name: "dev", Usage: "self-contained development mode in ./.coffer/"},
		&cli.StringFlag{Name: "config", Usage: "config `FILE` (TOML; default " + defaultConfigFile + " when it exists, none with --dev)", EnvVars: []string{"COFFER_CONFIG"}},
		&cli.StringFlag{Name: "state-dir", Usage: "state `DIR` (store; dev token)", Value: "/var/lib/coffer", EnvVars: []string{"COFFER_STATE_DIR"}},
		hsmURIFlag, // hsmuri.go
		&cli.StringFlag{Name: "hsm-module", Usage: "PKCS#11 module `PATH`", Value: hsm.DefaultModulePath, EnvVars: []string{"COFFER_HSM_MODULE"}},
		&cli.StringFlag{Name: "hsm-token", Usage: "PKCS#11 token `LABEL`", Value: "coffer", EnvVars: []string{"COFFER_HSM_TOKEN"}},
		&cli.StringFlag{Name: "hsm-pin-file", Usage: "`FILE` holding the token's user PIN (default $CREDENTIALS_DIRECTORY/hsm-pin)", EnvVars: []string{"COFFER_HSM_PIN_FILE"}},
		&cli.StringFlag{Name: "admin-group", Usage: "`GROUP` (name or gid) whose members are system admins", EnvVars: []string{"COFFER_ADMIN_GROUP"}},
		&cli.StringFlag{Name: "metrics-group", Usage: "`GROUP` (name or gid) whose members may read GET /v1/metrics and the status counts (system admins always may)", EnvVars: []string{"COFFER_METRICS_GROUP"}},
		&cli.StringFlag{Name: "metrics-listen", Usage: "also serve Prometheus metrics at http://`ADDR`/metrics; a loopback address only, such as 127.0.0.1:9464", EnvVars: []string{"COFFER_METRICS_LISTEN"}},
		&cli.StringFlag{Name: "socket-group", Usage: "`GROUP` (name or gid) that owns the socket: its members may connect (default: the admin group)", EnvVars: []string{"COFFER_SOCKET_GROUP"}},
		&cli.StringFlag{Name: "socket-mode", Usage: "permission bits of the socket, in octal `MODE`", Value: "0660", EnvVars: []string{"COFFER_SOCKET_MODE"}},
		&cli.StringFlag{Name: "issuer", Usage: "OAuth2/OIDC issuer `URL`: the iss of every JWT, and the base of the discovery document's URLs (where relying parties fetch it; config file: issuer)", Value: daemon.DefaultIssuer, EnvVars: []string{"COFFER_ISSUER"}},
		durationFlag(cli.StringFlag{Name: "expiry-warning", Usage: "warn daily about credentials and secrets expiring within `DURATION` (0: off)", EnvVars: []string{"COFFER_EXPIRY_WARNING"}}, daemon.DefaultExpiryWarning),
		&cli.UintFlag{Name: "vsock-port", Usage: "serve VM guests on AF_VSOCK `PORT` and, for the [[vm]]s of the config file, on hybrid-vsock sockets <uds_path>_PORT (0: off)", EnvVars: []string{"COFFER_VSOCK_PORT"}},
		&cli.BoolFlag{Name: "allow-reserved-cids", Usage: "let users bind vsock CIDs 0-2 (tests over the loopback transport only)", Hidden: true, EnvVars: []string{"COFFER_ALLOW_RESERVED_CIDS"}},
		&cli.StringFlag{Name: "creds-socket", Usage: "`PATH` of the LoadCredential= socket (dev: ./.coffer/creds.sock)", Value: "/run/coffer/creds.sock", EnvVars: []string{"COFFER_CREDS_SOCKET"}},
		kmsSocketFlag, kmsAllowUIDFlag, // daemon_kms.go
		&cli.IntFlag{Name: "max-connections", Usage: "serve at most `N` connections at once on each socket (API, vsock, each VM's, LoadCredential=); on the API socket up to 16 of them are kept for system admins (0: no limit)", Value: unixapi.DefaultMaxConns, EnvVars: []string{"COFFER_MAX_CONNECTIONS"}},
		&cli.IntFlag{Name: "max-connections-per-peer", Usage: "let one caller (a uid on the API socket, a CID on vsock, a VM) hold at most `N` of a socket's connections; more are refused with 429 (system admins are exempt; 0: the default)", Value: unixapi.DefaultMaxConnsPerPeer, EnvVars: []string{"COFFER_MAX_CONNECTIONS_PER_PEER"}},
		&cli.IntFlag{Name: "auth-fail-burst", Usage: "failed authentications (bad tokens) a caller may make in a row before getting 429 rate_limited (0: no limit)", Value: daemon.DefaultAuthFailBurst, EnvVars: []string{"COFFER_AUTH_FAIL_BURST"}},
		durationFlag(cli.StringFlag{Name: "auth-fail-refill", Usage: "forgive one failed authentication of a caller every `DURATION`", EnvVars: []string{"COFFER_AUTH_FAIL_REFILL"}}, daemon.DefaultAuthFailRefill),
		durationFlag(cli.StringFlag{Name: "read-header-timeout", Usage: "time a client has to send a request's line and headers", Hidden: true, EnvVars: []string{"COFFER_READ_HEADER_TIMEOUT"}}, unixapi.DefaultReadHeaderTimeout),
		durationFlag(cli.StringFlag{Name: "unit-action-timeout", Usage: "how long a secret rotation waits for each bound unit's on-rotate job (restart, reload) to finish", EnvVars: []string{"COFFER_UNIT_ACTION_TIMEOUT"}}, daemon.DefaultUnitActionTimeout),
		durationFlag(cli.StringFlag{Name: "read-timeout", Usage: "time a client has to send a whole request", Hidden: true, EnvVars: []string{"COFFER_READ_TIMEOUT"}}, unixapi.DefaultReadTimeout),
		&cli.StringFlag{Name: "audit-max-size", Usage: "keep the audit log's files within `SIZE` (e.g. 1GiB): rotated files are compressed, the oldest deleted with a signed record of what went; 0 keeps everything", Value: "1GiB", EnvVars: []string{"COFFER_AUDIT_MAX_SIZE"}},
		&cli.BoolFlag{Name: "audit-journal", Usage: "also write every audit log line to the daemon's log (the journal): a copy outside the state directory", Value: true, EnvVars: []string{"COFFER_AUDIT_JOURNAL"}},
		&cli.StringFlag{Name: "log-level", Usage: "debug, info, warn or error", Value: "info", EnvVars: []string{"COFFER_LOG_LEVEL"}},
		&cli.StringFlag{Name: "log-format", Usage: "`FORMAT` of the daemon's log on stderr: auto (journal under systemd's journal, else text), text, json (for log shippers) or journal", Value: logFormatAuto, EnvVars: []string{"COFFER_LOG_FORMAT"}},
		&cli.IntFlag{Name: "bearer-cache-size", Usage: "keep the resolution of up to `N` recently used tokens in memory, about 400 bytes each (0: none; every request then reads its token from the store)", Value: daemon.DefaultBearerCacheSize, EnvVars: []string{"COFFER_BEARER_CACHE_SIZE"}},
		&cli.StringFlag{Name: "kek-intermediate", Usage: "`MODE` of wrapping DEKs through an intermediate key per KEK version, unwrapped by the token once and then kept in locked memory: auto (for slow tokens: RSA-OAEP KEKs, as on a TPM), on (every KEK) or off (every delivery asks the token); see README \"Security model\"", Value: string(hsm.IntermediateAuto), EnvVars: []string{"COFFER_KEK_INTERMEDIATE"}},
		memoryLimitFlag,
		k8sSignerSocketFlag, k8sSignerMaxExpFlag, k8sSignerAllowUIDFlag,
		k8sListenFlag, k8sListenAnyFlag, k8sClientCAFlag, k8sBearerFileFlag, k8sSANFlag, k8sAudienceFlag,
	},
	Action: runDaemon,
}

func runDaemon(c *cli.Context) error {
	if c.Args().Present() {
		return usagef("daemon takes no arguments")
	}
	file := daemonFile{values: map[string]string{}}
	if path, explicit := daemonConfigPath(c); path != "" {
		var err error
		if file, err = loadDaemonFile(path, explicit); err != nil {
			return err
		}
		if err := file.apply(c, path); err != nil {
			return err
		}
	}
	if err := logLevel.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return usagef("unknown --log-level %q", c.String("log-level"))
	}
	if f := c.String("log-format"); slices.Contains(logFormats, f) {
		logFormat = f
	} else {
		return usagef("unknown --log-format %q: auto, text, json or journal", f)
	}
	auditBudget, perr := parseByteSize(c.String("audit-max-size"))
	if perr != nil {
		return usagef("--audit-max-size: %v", perr)
	}
	// One writer for the log and the audit log's copy (auditJournal): a
	// record or a batch of them is one Write, never interleaved.
	stderr := &lockedWriter{w: c.App.ErrWriter}
	log := slog.New(newLogHandler(stderr))
	slog.SetDefault(log)
	if err := applyMemoryLimit(c, log); err != nil {
		return err
	}

	dev := c.Bool("dev")
	stateDir, socket := c.String("state-dir"), c.String("socket")
	socketSet := c.IsSet("socket")
	if s, ok := file.values["socket"]; ok && !socketSet {
		socket, socketSet = s, true
	}
	if dev {
		if !c.IsSet("state-dir") {
			stateDir = devStateDir
		}
		if !socketSet {
			socket = filepath.Join(stateDir, "coffer.sock")
		}
	}
	var err error
	if stateDir, err = filepath.Abs(stateDir); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if socket, err = filepath.Abs(socket); err != nil {
		return fmt.Errorf("socket path: %w", err)
	}
	if err := daemon.CheckIssuer(c.String("issuer")); err != nil {
		return usagef("--issuer: %v", err)
	}
	hcfg, pinFile, err := hsmSettings(c)
	if err != nil {
		return err
	}
	if hcfg.Intermediate, err = hsm.ParseIntermediateMode(c.String("kek-intermediate")); err != nil {
		return usagef("--kek-intermediate: %v", err)
	}
	cfg := daemon.Config{
		Dev:          dev,
		StateDir:     stateDir,
		HSM:          hcfg,
		PINFile:      pinFile,
		AdminGroup:   c.String("admin-group"),
		MetricsGroup: c.String("metrics-group"),
		Issuer:       c.String("issuer"),
		Version:      version,

		AllowReservedCIDs: c.Bool("allow-reserved-cids"),
		Logger:            log,
	}
	reg := metrics.New()
	cfg.Observer = reg
	metricsAddr := c.String("metrics-listen")
	if metricsAddr != "" {
		if metricsAddr, err = metricsListen(metricsAddr); err != nil {
			return err
		}
	}
	maxConns := c.Int("max-connections")
	if maxConns < 0 {
		return usagef("--max-connections must be 0 (no limit) or more, not %d", maxConns)
	}
	perPeer := c.Int("max-connections-per-peer")
	switch {
	case perPeer < 0:
		return usagef("--max-connections-per-peer must be 0 (the default, %d) or more, not %d", unixapi.DefaultMaxConnsPerPeer, perPeer)
	case perPeer == 0:
		perPeer = unixapi.DefaultMaxConnsPerPeer
	}
	refill, err := flagDuration(c, "auth-fail-refill")
	if err != nil {
		return err
	}
	switch burst := c.Int("auth-fail-burst"); {
	case burst < 0:
		return usagef("--auth-fail-burst must be 0 (no limit) or more, not %d", burst)
	case refill <= 0:
		return usagef("--auth-fail-refill must be a positive duration, not %s", refill)
	case burst == 0:
		cfg.AuthLimit = daemon.AuthLimit{Burst: -1}
	default:
		cfg.AuthLimit = daemon.AuthLimit{Burst: burst, Refill: refill}
	}
	switch n := c.Int("bearer-cache-size"); {
	case n < 0:
		return usagef("--bearer-cache-size must be 0 (no cache) or more, not %d", n)
	case n == 0:
		cfg.BearerCacheSize = -1
	default:
		cfg.BearerCacheSize = n
	}
	for _, name := range []string{"read-header-timeout", "read-timeout", "unit-action-timeout"} {
		if d, err := flagDuration(c, name); err != nil {
			return err
		} else if d <= 0 {
			return usagef("--%s must be a positive duration", name)
		}
	}
	if cfg.ExpiryWarning, err = flagDuration(c, "expiry-warning"); err != nil {
		return err
	}
	if cfg.ExpiryWarning == 0 {
		cfg.ExpiryWarning = -1 // off
	}
	mode, err := strconv.ParseUint(c.String("socket-mode"), 8, 32)
	if err != nil || mode > 0o777 {
		return usagef("--socket-mode takes octal permission bits such as 0660, not %q", c.String("socket-mode"))
	}
	gid := -1
	if g := cmp.Or(c.String("socket-group"), cfg.AdminGroup); g != "" {
		n, err := daemon.ResolveGroup(g)
		if err != nil {
			return err
		}
		gid = int(n)
	}

	credsSocket := c.String("creds-socket")
	if dev && !c.IsSet("creds-socket") {
		credsSocket = filepath.Join(stateDir, "creds.sock")
	}
	notify := systemd.NewNotifier(log)
	activated, err := systemd.Activated()
	if err != nil {
		return fmt.Errorf("socket activation: %w", err)
	}

	ctx := c.Context
	notify.Status("opening the HSM and the store")
	svc, err := daemon.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer svc.Close()
	var journal audit.Journal
	if c.Bool("audit-journal") {
		journal = newAuditJournal(stderr)
	}
	auditLog, err := openAudit(ctx, svc, stateDir, log, journal, auditBudget)
	if err != nil {
		return err
	}
	defer auditLog.Close(context.Background()) // before svc.Close: it signs
	// The domain records into it from now on; what changed while it was
	// not attached (start-up, or before a crash) is drained first.
	if err := svc.SetAuditLog(ctx, auditLog); err != nil {
		return err
	}
	defer svc.CloseAudit(context.Background()) // before auditLog.Close
	auditLog.Record(daemonEvent("daemon.start", nil))
	// Unit bindings' on-rotate actions go to systemd over D-Bus (the
	// system bus, connected on first use).
	units := unitctl.New()
	defer units.Close()
	unitTimeout, _ := flagDuration(c, "unit-action-timeout") // checked at start
	svc.SetUnitController(units, unitTimeout)
	k8sHooks, err := startK8sWebhooks(c, svc, stateDir, log)
	if err != nil {
		return err
	}
	defer k8sHooks.Stop() // before the audit log and the service close

	// The callers of each socket share its slots fairly (unixapi.FairListener):
	// a uid, a CID or a VM holds at most perPeer; on the API socket a few
	// are kept for system admins.
	kmsSrv, err := openKMS(c, svc, dev, stateDir, log) // daemon_kms.go; nil when off
	if err != nil {
		return err
	}
	defer kmsSrv.Close()
	api, err := apiListener(activated, socket, unixapi.SocketOptions{Mode: os.FileMode(mode), GID: gid, Logger: log, MaxConns: maxConns, MaxConnsPerPeer: perPeer, IsAdmin: svc.IsSystemAdminPeer})
	if err != nil {
		return err
	}
	creds, err := credsListener(activated, credsSocket, log)
	if err != nil {
		api.Close()
		return err
	}
	creds = unixapi.LimitListener(creds, maxConns)
	vms, err := vsockListeners(activated, uint32(c.Uint("vsock-port")), c.Bool("allow-reserved-cids"), file.VMs, unixapi.SocketOptions{Mode: 0o660, GID: gid, Logger: log, MaxConns: maxConns, MaxConnsPerPeer: perPeer})
	if err != nil {
		api.Close()
		creds.Close()
		return err
	}
	if activated.API != nil {
		socket = api.Addr().String() // the socket systemd made
	}
	srv := unixapi.NewServer(svc, log)
	srv.SetMaxConnsPerPeer(perPeer)
	readHeader, _ := flagDuration(c, "read-header-timeout") // checked at start
	read, _ := flagDuration(c, "read-timeout")
	srv.SetTimeouts(unixapi.Timeouts{ReadHeader: readHeader, Read: read})
	srv.SetAuditor(auditLog)
	srv.SetMetrics(reg)
	// Background work ends before the service closes (deferred above), so
	// nothing runs into a closed HSM or store.
	bg, stopBG := context.WithCancel(context.Background())
	var background sync.WaitGroup
	defer background.Wait()
	defer stopBG()
	background.Go(func() { svc.RunMaintenance(bg) })
	background.Go(func() { memtrim.New(log).Run(bg) })
	served := make(chan error, 3+len(vms.all))
	stopSigner, err := startK8sSigner(c, svc, stateDir, log, served)
	if err != nil {
		return err
	}
	defer stopSigner()
	var metricsSrv *metricsServer
	if metricsAddr != "" {
		if metricsSrv, err = startMetrics(metricsAddr, reg, log, served); err != nil {
			return err
		}
	}
	go func() { served <- srv.Serve(api) }()
	k8sHooks.Serve(served)
	for _, l := range vms.all {
		go func() { served <- srv.Serve(l) }()
	}
	background.Go(func() {
		err := systemd.ServeCredentialsAudited(bg, creds, deliverCredential(svc), credentialRefused(svc), log, credsPeers(dev)...)
		if err != nil {
			served <- fmt.Errorf("credentials socket: %w", err)
		}
	})
	background.Go(func() { kmsSrv.Serve(bg, served) })

	log.Info("coffer is serving", "version", version, "socket", socket, "creds_socket", credsSocket, "vsock_port", c.Uint("vsock-port"), "vms", len(file.VMs), "max_connections", maxConns, "max_connections_per_peer", perPeer, "state_dir", stateDir, "dev", dev, "socket_activated", !activated.Empty())
	if dev {
		fmt.Fprintf(c.App.Writer, "export COFFER_SOCKET=%s\n", socket)
	}
	notify.Ready(fmt.Sprintf("serving on %s; HSM token %s", socket, svc.TokenLabel()))
	background.Go(func() { notify.RunWatchdog(bg, svc.Healthy) })

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var failed error
	for failed == nil && ctx.Err() == nil {
		select {
		case err := <-served:
			// One listener failing stops all of them, through the same
			// drain as a SIGTERM.
			failed = fmt.Errorf("serve: %w", err)
			log.Error("a listener failed; shutting down", "err", err)
		case <-svc.StoreLost():
			// Storage failed and the store could not be reopened: exit
			// once, for the service manager to start coffer again.
			failed = errors.New("the store could not be reopened after its storage failed: repair the filesystem, then start coffer again")
			log.Error("shutting down: the store is lost", "state_dir", stateDir)
		case <-hup:
			notify.Reloading()
			auditLog.Record(daemonEvent("config.reload", reloadDaemon(c, log, vms.hybrid, k8sHooks)))
			notify.Ready(fmt.Sprintf("serving on %s; configuration reloaded", socket))
		case <-ctx.Done():
		}
	}
	notify.Stopping()
	log.Info("shutting down: draining in-flight requests")
	shutCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	metricsSrv.Shutdown(shutCtx)
	err = srv.Shutdown(shutCtx)
	stopBG()
	background.Wait()
	// The last changes into the log, then the log closed with its last
	// checkpoint (both also deferred, for the early returns).
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), 10*time.Second)
	if err := svc.CloseAudit(drainCtx); err != nil {
		log.Error("changes wait in the store for the audit log (the next start writes them)", "err", err)
	}
	cancelDrain()
	auditLog.Record(daemonEvent("daemon.stop", nil))
	if err := auditLog.Close(context.Background()); err != nil {
		log.Error("closing the audit log", "err", err)
	}
	removeSockets(activated, socket, credsSocket)
	if failed != nil {
		return failed
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shut down: %w", err)
	}
	log.Info("stopped")
	return nil
}

// logLevel is the daemon's log level; SIGHUP may change it.
var logLevel slog.LevelVar

// apiListener is the socket systemd passed as "api", or a new one at path.
func apiListener(a systemd.Listeners, path string, opts unixapi.SocketOptions) (net.Listener, error) {
	if a.API != nil {
		ul, ok := a.API.(*net.UnixListener)
		if !ok {
			return nil, fmt.Errorf("the activated api socket is not a Unix socket")
		}
		return unixapi.FairListener(unixapi.NewPeerListener(ul, opts.Logger), opts), nil
	}
	return unixapi.ListenUnix(path, opts)
}

// credsListener is the socket systemd passed as "creds", or a new one at
// path (0600: only root, i.e. systemd, and the daemon's user connect).
func credsListener(a systemd.Listeners, path string, log *slog.Logger) (net.Listener, error) {
	if a.Creds != nil {
		return a.Creds, nil
	}
	return unixapi.ListenUnixPlain(path, unixapi.SocketOptions{Mode: 0o600, GID: -1, Logger: log})
}

// credsPeers are the uids besides root that may read credentials: in dev
// mode the developer's own, to try LoadCredential= by hand.
func credsPeers(dev bool) []uint32 {
	if dev {
		return []uint32{uint32(os.Getuid())}
	}
	return nil
}

// removeSockets removes the socket files the daemon made itself; systemd
// owns the activated ones.
func removeSockets(a systemd.Listeners, api, creds string) {
	if a.API == nil {
		os.Remove(api)
	}
	if a.Creds == nil {
		os.Remove(creds)
	}
}

// reloadDaemon re-reads what can change without a restart: the log level
// (from the environment and the config file) and the hybrid-vsock VMs.
// Its error is a fixed phrase for the audit log; the details are logged.
func reloadDaemon(c *cli.Context, log *slog.Logger, hybrid *unixapi.HybridListener, k8sHooks *k8sWebhooks) error {
	level := c.String("log-level")
	var failed error
	if err := k8sHooks.Reload(); err != nil {
		log.Error("reload: keeping the Kubernetes webhooks' running bearer and client CAs", "err", err)
		failed = errors.New("the Kubernetes webhooks' bearer or client CA file cannot be used; the running ones are kept")
	}
	if path, explicit := daemonConfigPath(c); path != "" {
		file, err := loadDaemonFile(path, explicit)
		if err != nil {
			log.Error("reload: keeping the running configuration", "err", err)
			return errors.New("the configuration file cannot be read; the running configuration is kept")
		}
		if v, ok := file.values["log_level"]; ok && (fromFile["log-level"] || !c.IsSet("log-level")) {
			level = v
		}
		if hybrid != nil {
			if err := hybrid.Reconfigure(hybridVMs(file.VMs)); err != nil {
				log.Error("reload: keeping the running VMs", "err", err)
				failed = errors.New("the VMs could not be reconfigured; the running ones are kept")
			}
		} else if len(file.VMs) > 0 {
			log.Warn("reload: [[vm]]s need --vsock-port at start; not serving them")
		}
	}
	if err := logLevel.UnmarshalText([]byte(level)); err != nil {
		log.Error("reload: bad log level; keeping the running one", "log_level", level)
		return errors.New("bad log level; the running one is kept")
	}
	log.Info("configuration reloaded", "log_level", logLevel.Level().String())
	return failed
}

// vmListeners are the listeners for VM guests.
type vmListeners struct {
	all    []net.Listener
	hybrid *unixapi.HybridListener
}

// vsockListeners opens the AF_VSOCK listener (passed by systemd as
// "vsock", or on port) and the hybrid-vsock sockets of the configured VMs,
// each limited to opts.MaxConns connections, opts.MaxConnsPerPeer per CID
// or VM.
func vsockListeners(a systemd.Listeners, port uint32, allowLocal bool, vms []vmConfig, opts unixapi.SocketOptions) (vmListeners, error) {
	var out vmListeners
	switch {
	case a.Vsock != nil:
		out.all = append(out.all, unixapi.FairListener(unixapi.NewVsockListener(a.Vsock, opts.Logger, allowLocal), opts))
	case port != 0:
		l, err := unixapi.ListenVsock(port, opts.Logger, allowLocal)
		switch {
		case err == nil:
			out.all = append(out.all, unixapi.FairListener(l, opts))
		case len(vms) > 0:
			// Firecracker-style hosts need no AF_VSOCK for hybrid vsock.
			opts.Logger.Warn("no AF_VSOCK listener; serving the hybrid-vsock VMs only", "err", err)
		default:
			return out, err
		}
	}
	if port == 0 {
		if len(vms) > 0 {
			return out, errors.New("the config file names [[vm]]s: serving them needs --vsock-port")
		}
		return out, nil
	}
	h, err := unixapi.ListenHybridVsock(hybridVMs(vms), port, opts)
	if err != nil {
		for _, l := range out.all {
			l.Close()
		}
		return out, err
	}
	out.hybrid = h
	out.all = append(out.all, h)
	return out, nil
}

func hybridVMs(vms []vmConfig) []unixapi.HybridVM {
	out := make([]unixapi.HybridVM, 0, len(vms))
	for _, vm := range vms {
		out = append(out, unixapi.HybridVM{Name: vm.Name, UDSPath: vm.UDSPath, VMMUID: vm.VMMUID})
	}
	return out
}
