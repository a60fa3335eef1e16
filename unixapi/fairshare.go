package unixapi

// Fair share of a socket's connection slots.
//
// A socket serves at most MaxConns connections at once. Who holds them is
// not first come, first served: one caller could then take every slot with
// idle keep-alive connections and keep everybody else out until the idle
// timeout, and reconnect at once. A caller is identified at accept (the uid
// of SO_PEERCRED on a Unix socket, the CID on vsock, the VM on hybrid
// vsock), and then:
//
//   - it may hold at most MaxConnsPerPeer of the socket's connections;
//     a new one beyond that is answered 429 too_many_connections and
//     closed. (Accepting and refusing, rather than leaving the connection
//     in the backlog, is the only way to see who is calling.)
//   - the last few slots (the admin reserve) are for system admins only,
//     who are not held to the per-caller limit either: an admin always gets
//     in while the others fill the rest.
//   - when the slots a caller may take are all held, room is made by
//     closing a connection that serves nothing — idle between requests, or
//     accepted over a second ago with no request yet — of the caller that
//     holds the most, provided it holds at least two more than the new
//     caller. Without such a connection the caller is answered 503 and
//     closed.
//   - while the socket is busy (more than half its slots held), a
//     keep-alive connection idle for BusyIdleTimeout is closed, biggest
//     holder first, instead of after the server's two-minute idle timeout,
//     until the socket is no longer busy.
//   - when every slot is held (admins included), Accept waits for one to be
//     freed, as LimitListener does: the connections beyond wait in the
//     kernel's backlog and cost nothing.
//
// Closing an idle keep-alive connection is safe for HTTP/1.1 clients: Go's
// transport (and curl) retry an idempotent request on a reused connection
// that the server closed. A refusal is a real HTTP answer rather than a
// reset, so that a client can say what happened: the answer is written at
// once, the write side shut, and the request read and discarded until the
// client hangs up (a Unix socket closed with unread data resets the peer
// before it has read the answer). At most maxRefusing refusals linger so at
// once, each for at most refuseLinger; beyond that the answer is written
// and the connection closed at once. So a flood of connections costs at
// most MaxConns + maxRefusing + 1 descriptors and goroutines.

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/daemon"
)

// DefaultMaxConnsPerPeer is how many of a socket's connections one caller
// (a uid, a CID, a VM) may hold unless configured otherwise.
const DefaultMaxConnsPerPeer = 32

// AdminReserve is how many of a socket's slots only system admins may
// take (at most a quarter of the socket's slots).
const AdminReserve = 16

// BusyIdleTimeout is how long a keep-alive connection may stay idle while
// its socket is busy (more than half its slots held).
const BusyIdleTimeout = 5 * time.Second

// Wire codes of the refusals.
const (
	CodeTooManyConnections = "too_many_connections"
)

const (
	// stallAge: a connection that has not sent a whole request this long
	// after it was accepted serves nothing (a real client sends its
	// request at once) and may be closed to make room.
	stallAge = time.Second
	// reapEvery is how often a busy socket looks for stale idle
	// connections.
	reapEvery = time.Second
	// maxRefusing refusals of a socket linger at once, each at most
	// refuseLinger.
	maxRefusing  = 16
	refuseLinger = time.Second
	// refusalLogInterval: one log line per caller per interval, with a
	// count.
	refusalLogInterval = 10 * time.Second
)

// FairListener returns a listener that shares l's connection slots among
// its callers as described above. It reads opts.MaxConns (0: no limit on
// the total), opts.MaxConnsPerPeer (0: no limit per caller), opts.IsAdmin
// (nil: nobody is an admin and there is no reserve) and opts.Logger. l's
// connections carry their identity (NewPeerListener, NewVsockListener);
// one without is an anonymous caller of its network. With neither limit
// FairListener returns l itself.
//
// The connections' idle time is known from the Server (http.Server's
// ConnState): serve FairListener's connections with a Server.
func FairListener(l net.Listener, opts SocketOptions) net.Listener {
	if opts.MaxConns <= 0 && opts.MaxConnsPerPeer <= 0 {
		return l
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	fl := &fairListener{
		Listener:     l,
		log:          log,
		total:        max(opts.MaxConns, 0),
		perPeer:      max(opts.MaxConnsPerPeer, 0),
		isAdmin:      opts.IsAdmin,
		busyIdle:     BusyIdleTimeout,
		stallAge:     stallAge,
		reapEvery:    reapEvery,
		maxRefusing:  maxRefusing,
		refuseLinger: refuseLinger,
		done:         make(chan struct{}),
		freed:        make(chan struct{}, 1),
		peers:        map[peerKey]*peerConns{},
		logs:         map[peerKey]*refusalLog{},
	}
	if fl.isAdmin != nil && fl.total > 0 {
		fl.reserve = min(AdminReserve, fl.total/4)
	}
	sockets.add(fl)
	if fl.total > 0 && fl.perPeer > 0 {
		// Nobody but an admin can hold more than the slots outside the
		// reserve anyway.
		fl.perPeer = min(fl.perPeer, max(fl.total-fl.reserve, 1))
	}
	fl.tooMany = refusalAnswer(http.StatusTooManyRequests, api.ErrorBody{Error: CodeTooManyConnections,
		Message: "this caller already has " + strconv.Itoa(fl.perPeer) + " connections open, the most one caller may have; close idle ones or retry later"})
	fl.busy = refusalAnswer(http.StatusServiceUnavailable, api.ErrorBody{Error: daemon.CodeUnavailable,
		Message: "the daemon is serving as many connections as it can; retry later"})
	return fl
}

// peerKey names a caller on one socket.
type peerKey struct {
	channel daemon.Channel
	uid     uint32 // a Unix peer's uid
	cid     uint32 // a vsock peer's context id
	vm      string // a hybrid vsock VM's name
}

// keyOf is the caller a connection's principal stands for. Connections
// without an identity are one anonymous caller per network.
func keyOf(p daemon.Principal) peerKey {
	switch {
	case p.Channel == daemon.ChannelUnix && p.HasCred:
		return peerKey{channel: p.Channel, uid: p.UID}
	case p.Channel == daemon.ChannelVsock:
		return peerKey{channel: p.Channel, cid: p.CID}
	case p.Channel == daemon.ChannelHybridVsock:
		return peerKey{channel: p.Channel, vm: p.VM}
	}
	return peerKey{channel: p.Channel}
}

// principalOf is the identity an accepted connection carries.
func principalOf(c net.Conn) daemon.Principal {
	if ic, ok := innerConn(c).(*identConn); ok {
		return ic.principal
	}
	return daemon.Principal{Channel: daemon.Channel(c.LocalAddr().Network())}
}

type fairListener struct {
	net.Listener
	log     *slog.Logger
	total   int // 0: no limit
	perPeer int // 0: no limit
	reserve int
	isAdmin func(uid, gid uint32) bool

	// Constants, fields for the tests.
	busyIdle, stallAge, reapEvery, refuseLinger time.Duration
	maxRefusing                                 int

	tooMany, busy []byte // the refusals' answers

	done      chan struct{}
	closeOnce sync.Once
	freed     chan struct{} // a slot was given back (Accept may wait for one)

	mu       sync.Mutex
	closed   bool
	n        int // connections admitted and not yet closed
	peers    map[peerKey]*peerConns
	refusing int // refusals lingering
	reaper   *time.Timer
	logs     map[peerKey]*refusalLog

	// For metrics (metrics.go): refusals, and those of a caller that
	// held its share.
	refused, capHits atomic.Uint64
}

// peerConns are one caller's open connections.
type peerConns struct {
	conns map[*fairConn]struct{}
}

// refusalLog spaces the log lines about one caller's refusals.
type refusalLog struct {
	last  time.Time
	count int
}

// fairConn is an admitted connection. Its state fields are guarded by the
// listener's mutex.
type fairConn struct {
	net.Conn
	l    *fairListener
	key  peerKey
	once sync.Once

	state http.ConnState // StateNew until the Server says otherwise
	since time.Time      // when it was accepted, or last became idle
	gone  bool           // no longer counted: closed, or being closed
}

// Accept returns the next connection admitted. A refused one is answered
// and closed in the background; Accept goes on.
func (l *fairListener) Accept() (net.Conn, error) {
	for {
		if err := l.waitForSlot(); err != nil {
			return nil, err
		}
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if fc := l.admit(c); fc != nil {
			return fc, nil
		}
	}
}

// waitForSlot returns when the socket has a free slot (or l is closed):
// with every slot held nobody can be admitted without making room, and
// the reaper makes it.
func (l *fairListener) waitForSlot() error {
	for {
		l.mu.Lock()
		full := l.total > 0 && l.n >= l.total
		l.mu.Unlock()
		if !full {
			return nil
		}
		select {
		case <-l.freed:
		case <-l.done:
			return &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: net.ErrClosed}
		}
	}
}

// verdict is what admit decides for a connection.
type verdict int

const (
	admitted verdict = iota
	refusedPeer
	refusedBusy
)

// admit counts c in, making room if it must, or refuses it and returns nil.
func (l *fairListener) admit(c net.Conn) *fairConn {
	p := principalOf(c)
	fc := &fairConn{Conn: c, l: l, key: keyOf(p), state: http.StateNew}
	now := time.Now()
	l.mu.Lock()
	if l.freeForLocked(fc.key) {
		l.addLocked(fc, now)
		l.mu.Unlock()
		return fc
	}
	l.mu.Unlock()
	// Whether the caller is an admin matters only now; deciding it may
	// read the group database, so not under the lock.
	admin := l.isAdmin != nil && p.Channel == daemon.ChannelUnix && p.HasCred && l.isAdmin(p.UID, p.GID)
	l.mu.Lock()
	v, evicted, open := l.placeLocked(fc, admin, now)
	l.mu.Unlock()
	if evicted != nil {
		evicted.Close()
	}
	if v == admitted {
		return fc
	}
	l.refuse(c, p, fc.key, v, open)
	return nil
}

// freeForLocked tells whether any caller, admin or not, may have one more
// connection without making room.
func (l *fairListener) freeForLocked(k peerKey) bool {
	if l.perPeer > 0 && l.countLocked(k) >= l.perPeer {
		return false
	}
	return l.total == 0 || l.n < l.total-l.reserve
}

// placeLocked admits fc, making room if it must (the connection it then
// closes is returned: the caller closes it outside the lock), or says why
// not and how many connections count against the caller.
func (l *fairListener) placeLocked(fc *fairConn, admin bool, now time.Time) (verdict, *fairConn, int) {
	mine := l.countLocked(fc.key)
	limit := l.total - l.reserve
	if admin {
		limit = l.total
	}
	switch {
	case !admin && l.perPeer > 0 && mine >= l.perPeer:
		// A connection of its own that it has already hung up on (the
		// server has not noticed yet) is no reason to refuse it.
		if old := l.hungUpLocked(fc.key); old != nil {
			l.dropLocked(old)
			l.addLocked(fc, now)
			return admitted, old, 0
		}
		return refusedPeer, nil, mine
	case l.total == 0 || l.n < limit:
		l.addLocked(fc, now)
		return admitted, nil, 0
	}
	old := l.hungUpLocked(fc.key)
	if old == nil {
		old = l.victimLocked(mine, now)
	}
	if old == nil {
		return refusedBusy, nil, l.n
	}
	l.dropLocked(old)
	l.addLocked(fc, now)
	return admitted, old, 0
}

func (l *fairListener) countLocked(k peerKey) int {
	if pc := l.peers[k]; pc != nil {
		return len(pc.conns)
	}
	return 0
}

func (l *fairListener) addLocked(fc *fairConn, now time.Time) {
	pc := l.peers[fc.key]
	if pc == nil {
		pc = &peerConns{conns: map[*fairConn]struct{}{}}
		l.peers[fc.key] = pc
	}
	pc.conns[fc] = struct{}{}
	fc.since = now
	l.n++
	l.armReaperLocked()
}

// dropLocked stops counting fc; its Close then gives nothing back.
func (l *fairListener) dropLocked(fc *fairConn) {
	if fc.gone {
		return
	}
	fc.gone = true
	l.n--
	pc := l.peers[fc.key]
	delete(pc.conns, fc)
	if len(pc.conns) == 0 {
		delete(l.peers, fc.key)
	}
}

// idleLocked tells whether fc serves nothing now: idle between requests,
// or accepted stallAge ago and still without a whole request.
func (l *fairListener) idleLocked(fc *fairConn, now time.Time) bool {
	return fc.state == http.StateIdle || (fc.state == http.StateNew && now.Sub(fc.since) >= l.stallAge)
}

// hungUpLocked returns a connection of k whose peer has closed its end,
// if there is one. Whatever its state, it serves nobody: net/http cancels
// the request of a peer that hung up, and a connection the client closed
// right after reading its answer may not be marked idle yet.
func (l *fairListener) hungUpLocked(k peerKey) *fairConn {
	pc := l.peers[k]
	if pc == nil {
		return nil
	}
	for fc := range pc.conns {
		if fc.state != http.StateHijacked && peerHungUp(fc.Conn) {
			return fc
		}
	}
	return nil
}

// victimLocked picks the connection to close to make room for a caller
// holding mine: the longest idle one of the caller that holds the most,
// among callers holding at least mine+2 (taking from a caller that holds
// mine+1 would only swap the two).
func (l *fairListener) victimLocked(mine int, now time.Time) *fairConn {
	var best *fairConn
	bestCount := 0
	for _, pc := range l.peers {
		n := len(pc.conns)
		if n < mine+2 || n < bestCount {
			continue
		}
		for fc := range pc.conns {
			if !l.idleLocked(fc, now) {
				continue
			}
			if best == nil || n > bestCount || fc.since.Before(best.since) {
				best, bestCount = fc, n
			}
		}
	}
	return best
}

// busyLocked: more than half the slots are held.
func (l *fairListener) busyLocked() bool { return l.total > 0 && l.n > l.total/2 }

// armReaperLocked starts the reaper when the socket is busy.
func (l *fairListener) armReaperLocked() {
	if l.reaper == nil && !l.closed && l.busyLocked() {
		l.reaper = time.AfterFunc(l.reapEvery, l.reap)
	}
}

// reap closes keep-alive connections idle for busyIdle while the socket
// is busy, the biggest holder's first, until it is not busy any more.
func (l *fairListener) reap() {
	now := time.Now()
	var closing []*fairConn
	l.mu.Lock()
	l.reaper = nil
	if l.closed {
		l.mu.Unlock()
		return
	}
	for l.busyLocked() {
		var best *fairConn
		bestCount := 0
		for _, pc := range l.peers {
			if len(pc.conns) < bestCount {
				continue
			}
			for fc := range pc.conns {
				if fc.state != http.StateIdle || now.Sub(fc.since) < l.busyIdle {
					continue
				}
				if best == nil || len(pc.conns) > bestCount || fc.since.Before(best.since) {
					best, bestCount = fc, len(pc.conns)
				}
			}
		}
		if best == nil {
			break
		}
		l.dropLocked(best)
		closing = append(closing, best)
	}
	l.armReaperLocked()
	open := l.n
	l.mu.Unlock()
	for _, fc := range closing {
		fc.Close()
	}
	if len(closing) > 0 {
		l.log.Debug("closed idle connections: the socket is busy", "closed", len(closing), "open", open, "max", l.total)
		l.signalFreed()
	}
}

func (l *fairListener) signalFreed() {
	select {
	case l.freed <- struct{}{}:
	default:
	}
}

// setState follows the Server's view of fc.
func (l *fairListener) setState(fc *fairConn, s http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if fc.gone {
		return
	}
	switch s {
	case http.StateActive, http.StateHijacked:
		fc.state = s
	case http.StateIdle:
		fc.state, fc.since = s, time.Now()
		l.armReaperLocked()
	}
}

// release gives fc's slot back.
func (l *fairListener) release(fc *fairConn) {
	l.mu.Lock()
	l.dropLocked(fc)
	l.mu.Unlock()
	l.signalFreed()
}

// refuse answers c (429 or 503) and closes it, in the background when a
// lingering slot is free. It logs at most one line per caller per interval.
func (l *fairListener) refuse(c net.Conn, p daemon.Principal, k peerKey, v verdict, open int) {
	answer, limit := l.tooMany, l.perPeer
	if v == refusedBusy {
		answer, limit = l.busy, l.total-l.reserve
	}
	l.refused.Add(1)
	if v != refusedBusy {
		l.capHits.Add(1)
	}
	now := time.Now()
	l.mu.Lock()
	linger := l.refusing < l.maxRefusing
	if linger {
		l.refusing++
	}
	r := l.logs[k]
	if r == nil {
		if len(l.logs) >= 1024 {
			for k, r := range l.logs {
				if now.Sub(r.last) >= refusalLogInterval {
					delete(l.logs, k)
				}
			}
		}
		r = &refusalLog{}
		l.logs[k] = r
	}
	r.count++
	logIt, count := r.last.IsZero() || now.Sub(r.last) >= refusalLogInterval, r.count
	if logIt {
		r.last, r.count = now, 0
	}
	l.mu.Unlock()
	if logIt {
		msg := "refusing connections: the caller has as many open as it may"
		if v == refusedBusy {
			msg = "refusing connections: every slot a caller may take is held"
		}
		l.log.Warn(msg, "caller", p.String(), "open", open, "max", limit, "refused_since_last_line", count)
	}
	if !linger {
		c.SetWriteDeadline(now.Add(10 * time.Millisecond))
		c.Write(answer)
		c.Close()
		return
	}
	go func() {
		defer func() {
			l.mu.Lock()
			l.refusing--
			l.mu.Unlock()
		}()
		c.SetDeadline(time.Now().Add(l.refuseLinger))
		if _, err := c.Write(answer); err == nil {
			closeWrite(c)
			io.Copy(io.Discard, io.LimitReader(c, 64<<10))
		}
		c.Close()
	}()
}

// refusalAnswer is a whole HTTP/1.1 answer that closes the connection.
func refusalAnswer(status int, body api.ErrorBody) []byte {
	jb := jsonBufs.Get().(*jsonBuf)
	defer jb.release()
	jb.enc.Encode(body)
	head := "HTTP/1.1 " + strconv.Itoa(status) + " " + http.StatusText(status) + "\r\n" +
		"Content-Type: application/json\r\n" +
		"Cache-Control: no-store\r\n" +
		"Retry-After: 1\r\n" +
		"Connection: close\r\n" +
		"Content-Length: " + strconv.Itoa(jb.buf.Len()) + "\r\n\r\n"
	return append([]byte(head), jb.buf.Bytes()...)
}

// Close stops accepting; an Accept waiting for a slot returns at once.
// Connections already accepted stay open.
func (l *fairListener) Close() error {
	l.closeOnce.Do(func() {
		sockets.remove(l)
		close(l.done)
		l.mu.Lock()
		l.closed = true
		if l.reaper != nil {
			l.reaper.Stop()
			l.reaper = nil
		}
		l.mu.Unlock()
	})
	return l.Listener.Close()
}

func (c *fairConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c) })
	return err
}

// NetConn returns the wrapped connection (the convention of tls.Conn).
func (c *fairConn) NetConn() net.Conn { return c.Conn }

// CloseWrite half-closes the connection when it can, so net/http can end
// an error answer (431, 400) with a FIN rather than a reset.
func (c *fairConn) CloseWrite() error { return closeWrite(c.Conn) }

// trackConnState is the Server's ConnState hook: it tells a fair
// listener which of its connections are idle.
func trackConnState(c net.Conn, s http.ConnState) {
	if fc, ok := c.(*fairConn); ok {
		fc.l.setState(fc, s)
	}
}
