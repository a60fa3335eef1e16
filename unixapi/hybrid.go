package unixapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coffer-hsm/coffer/daemon"
)

// HybridVM is one Firecracker / Cloud Hypervisor VM whose vsock device the
// VMM exposes on the host as a Unix socket ("hybrid vsock").
type HybridVM struct {
	// Name names the VM; users bind it (vm_names). It follows the API's
	// name rule.
	Name string
	// UDSPath is the vsock device's uds_path as the VMM was configured with
	// it, seen from the host (for a jailed Firecracker, inside the jail's
	// root). When the guest connects to the host (CID 2) on port P, the VMM
	// connects to the Unix socket "<UDSPath>_P": that is where coffer
	// listens.
	UDSPath string
	// VMMUID is the uid the VMM process runs as. The socket a connection
	// arrives on names the VM, so only the VMM may connect there: any other
	// peer would pose as the VM. Connections from other uids are refused.
	VMMUID uint32
}

// maxSunPath is the longest Unix socket path Linux takes (sun_path is 108
// bytes including the terminating NUL).
const maxSunPath = 107

// HybridSocketPath is the host-side socket the VMM connects to when vm's
// guest connects to the host on port.
func HybridSocketPath(vm HybridVM, port uint32) string {
	return vm.UDSPath + "_" + strconv.FormatUint(uint64(port), 10)
}

// HybridListener accepts hybrid vsock connections of several VMs on one
// port: it listens on "<uds_path>_<port>" for each VM and hands out their
// connections through one Accept. Each accepted connection carries the
// principal {Channel: hybrid-vsock, VM: name}, where the name comes from
// the socket the connection arrived on — never from the peer. The peer's
// own Unix credentials (those of the VMM process) are not part of it.
type HybridListener struct {
	port uint32
	opts SocketOptions
	log  *slog.Logger

	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once

	mu     sync.Mutex
	closed bool
	vms    map[string]*hybridSocket // by VM name
	wg     sync.WaitGroup
}

type hybridSocket struct {
	vm   HybridVM
	path string
	l    net.Listener
}

// ListenHybridVsock listens on "<uds_path>_<port>" for every VM in vms,
// with the same stale-socket handling as ListenUnix (refuse when a live
// daemon answers, remove a dead one's file) and the mode and group opts
// give (the VMM's user must be able to connect). VM names must be valid and
// unique, and so must their socket paths. An empty vms is allowed: the
// listener then accepts nothing until Reconfigure adds VMs.
func ListenHybridVsock(vms []HybridVM, port uint32, opts SocketOptions) (*HybridListener, error) {
	if port == 0 || port == 0xFFFFFFFF {
		return nil, fmt.Errorf("hybrid vsock: port %d is not a port to serve on", port)
	}
	if err := checkHybridVMs(vms, port); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	h := &HybridListener{
		port:  port,
		opts:  opts,
		log:   log,
		conns: make(chan net.Conn),
		done:  make(chan struct{}),
		vms:   map[string]*hybridSocket{},
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, vm := range vms {
		if err := h.addLocked(vm); err != nil {
			h.closeLocked()
			h.wg.Wait()
			return nil, err
		}
	}
	return h, nil
}

// checkHybridVMs validates a VM list: names, paths, uniqueness.
func checkHybridVMs(vms []HybridVM, port uint32) error {
	names := map[string]bool{}
	paths := map[string]string{}
	for _, vm := range vms {
		if !daemon.ValidName(vm.Name) { // the API's name rule (DESIGN §4)
			return fmt.Errorf("hybrid vsock: invalid VM name %q: use 1-64 of a-z 0-9 . _ - starting and ending with a letter or digit", vm.Name)
		}
		if names[vm.Name] {
			return fmt.Errorf("hybrid vsock: VM %q is configured twice", vm.Name)
		}
		names[vm.Name] = true
		if vm.UDSPath == "" {
			return fmt.Errorf("hybrid vsock: VM %q has no uds_path", vm.Name)
		}
		if strings.ContainsRune(vm.UDSPath, 0) {
			return fmt.Errorf("hybrid vsock: VM %q: uds_path contains a NUL byte", vm.Name)
		}
		p := HybridSocketPath(vm, port)
		if len(p) > maxSunPath {
			return fmt.Errorf("hybrid vsock: VM %q: socket path %s is %d bytes, longer than the %d a Unix socket path may have", vm.Name, p, len(p), maxSunPath)
		}
		if other, ok := paths[p]; ok {
			return fmt.Errorf("hybrid vsock: VMs %q and %q have the same uds_path %s", other, vm.Name, vm.UDSPath)
		}
		paths[p] = vm.Name
	}
	return nil
}

// addLocked listens for vm and starts handing its connections to Accept.
//
// Each VM has a socket of its own, so VMs never compete for each other's
// slots. On that socket the VM is the one caller: it holds at most
// MaxConnsPerPeer connections (and MaxConns), like a CID on AF_VSOCK, so a
// VM's connections also cost the daemon a bounded share of what the other
// VMs and the Unix socket need (descriptors, goroutines). There are no
// admins (and no admin reserve) on a VM's socket.
func (h *HybridListener) addLocked(vm HybridVM) error {
	path := HybridSocketPath(vm, h.port)
	ul, err := ListenUnixPlain(path, h.opts)
	if err != nil {
		return fmt.Errorf("hybrid vsock for VM %q: %w", vm.Name, err)
	}
	opts := h.opts
	opts.IsAdmin = nil
	opts.Logger = h.log
	l := FairListener(&vmmListener{Listener: NewPeerListener(ul, h.log), vm: vm, log: h.log}, opts)
	s := &hybridSocket{vm: vm, path: path, l: l}
	h.vms[vm.Name] = s
	h.wg.Add(1)
	go h.acceptLoop(s)
	h.log.Info("listening for hybrid vsock", "vm", vm.Name, "path", path)
	return nil
}

// vmmListener accepts the connections of one VM's socket: those from its
// VMM, with the VM as their principal. Any other peer would pose as the VM
// (the socket names it): it is logged and closed, and Accept goes on.
type vmmListener struct {
	net.Listener // a peer listener
	vm           HybridVM
	log          *slog.Logger
	refusals     logSampler // a peer retrying in a loop: one line per interval
}

func (l *vmmListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ic, ok := innerConn(c).(*identConn)
		if !ok || !ic.principal.HasCred || ic.principal.UID != l.vm.VMMUID {
			var uid any = "unknown"
			if ok && ic.principal.HasCred {
				uid = ic.principal.UID
			}
			if n, ok := l.refusals.tick(time.Now()); ok {
				l.log.Warn("hybrid vsock: refused a connection that is not from the VM's VMM", "vm", l.vm.Name, "peer_uid", uid, "vmm_uid", l.vm.VMMUID, "refused_since_last_line", n)
			}
			c.Close()
			continue
		}
		// The Unix peer is the VMM process, not the guest: its credentials
		// serve only the check above and the log. (c is not shared yet:
		// its identity may still change.)
		l.log.Debug("hybrid vsock connection", "vm", l.vm.Name, "vmm_pid", ic.principal.PID)
		ic.principal = daemon.Principal{Channel: daemon.ChannelHybridVsock, VM: l.vm.Name}
		return c, nil
	}
}

// acceptLoop accepts connections on one VM's socket until it is closed.
func (h *HybridListener) acceptLoop(s *hybridSocket) {
	defer h.wg.Done()
	var delay time.Duration
	for {
		c, err := s.l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient failure (EMFILE, ...) on one VM's socket must not
			// stop the others: log, back off, go on.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			h.log.Warn("hybrid vsock accept failed", "vm", s.vm.Name, "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
				continue
			case <-h.done:
				return
			}
		}
		delay = 0
		select {
		case h.conns <- c:
		case <-h.done:
			c.Close()
			return
		}
	}
}

// Accept waits for the next connection from any configured VM.
func (h *HybridListener) Accept() (net.Conn, error) {
	select {
	case c := <-h.conns:
		return c, nil
	case <-h.done:
		return nil, &net.OpError{Op: "accept", Net: "unix", Addr: h.Addr(), Err: net.ErrClosed}
	}
}

// Close stops listening on every VM's socket and removes the socket files.
// Connections already accepted stay open.
func (h *HybridListener) Close() error {
	h.mu.Lock()
	err := h.closeLocked()
	h.mu.Unlock()
	h.wg.Wait()
	return err
}

func (h *HybridListener) closeLocked() error {
	h.closeOnce.Do(func() { close(h.done) })
	h.closed = true
	var errs []error
	for name, s := range h.vms {
		if err := s.l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("close hybrid vsock of VM %q: %w", name, err))
		}
		delete(h.vms, name)
	}
	return errors.Join(errs...)
}

// Reconfigure makes the listener serve exactly vms (for a config reload):
// it stops listening for VMs no longer listed or whose uds_path changed,
// and starts listening for new ones. Connections already accepted are not
// touched. When the list is invalid nothing changes; when a new socket
// cannot be opened, the VMs before it are already in place and the error
// says which VM failed.
func (h *HybridListener) Reconfigure(vms []HybridVM) error {
	if err := checkHybridVMs(vms, h.port); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return net.ErrClosed
	}
	want := map[string]HybridVM{}
	for _, vm := range vms {
		want[vm.Name] = vm
	}
	for name, s := range h.vms {
		if vm, ok := want[name]; !ok || vm.UDSPath != s.vm.UDSPath || vm.VMMUID != s.vm.VMMUID {
			s.l.Close()
			delete(h.vms, name)
			h.log.Info("stopped listening for hybrid vsock", "vm", name, "path", s.path)
		}
	}
	for _, vm := range vms {
		if _, ok := h.vms[vm.Name]; ok {
			continue
		}
		if err := h.addLocked(vm); err != nil {
			return err
		}
	}
	return nil
}

// VMs returns the VMs listened for, sorted by name.
func (h *HybridListener) VMs() []HybridVM {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]HybridVM, 0, len(h.vms))
	for _, s := range h.vms {
		out = append(out, s.vm)
	}
	slices.SortFunc(out, func(a, b HybridVM) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Addr describes the listener: the port and its VMs' sockets.
func (h *HybridListener) Addr() net.Addr {
	return hybridAddr{port: h.port, vms: h.VMs()}
}

type hybridAddr struct {
	port uint32
	vms  []HybridVM
}

func (hybridAddr) Network() string { return string(daemon.ChannelHybridVsock) }

func (a hybridAddr) String() string {
	paths := make([]string, len(a.vms))
	for i, vm := range a.vms {
		paths[i] = vm.Name + "=" + HybridSocketPath(vm, a.port)
	}
	return "port " + strconv.FormatUint(uint64(a.port), 10) + " [" + strings.Join(paths, " ") + "]"
}
