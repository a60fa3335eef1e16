package unixapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/daemon"
)

func (s *Server) deliveryRoutes() {
	s.handle("POST /v1/secrets/{id}/bindings", s.createBinding)
	s.handle("GET /v1/secrets/{id}/bindings", s.listBindings)
	s.handle("DELETE /v1/secrets/{id}/bindings/{b}", s.deleteBinding)
	s.handle("GET /v1/deliver/{name}", s.deliver)
}

func bindingWire(b daemon.Binding) api.Binding {
	return api.Binding{ID: b.ID, SecretID: b.SecretID, Kind: b.Kind, Unit: b.Unit, Credential: b.Credential, User: b.User, UserID: b.UserID, Name: b.Name, OnRotate: b.OnRotate, CreatedAt: b.CreatedAt}
}

func (s *Server) createBinding(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageBindings, daemon.Resource{Secret: r.PathValue("id")})
	if err != nil {
		return err
	}
	var req api.BindingCreateRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	b, err := s.b.CreateBinding(r.Context(), g, daemon.BindingInput(req))
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/secrets/"+b.SecretID+"/bindings/"+b.ID)
	writeJSON(w, http.StatusCreated, bindingWire(b))
	return nil
}

func (s *Server) listBindings(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActReadSecret, daemon.Resource{Secret: r.PathValue("id")})
	if err != nil {
		return err
	}
	bs, err := s.b.ListBindings(r.Context(), g)
	if err != nil {
		return err
	}
	out := api.List[api.Binding]{Items: make([]api.Binding, 0, len(bs))}
	for _, b := range bs {
		out.Items = append(out.Items, bindingWire(b))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) deleteBinding(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageBindings, daemon.Resource{Secret: r.PathValue("id")})
	if err != nil {
		return err
	}
	if err := s.b.DeleteBinding(r.Context(), g, r.PathValue("b")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deliver hands the raw payload (or, with ?key=K, one key_values entry) to
// the consumer it is bound to (?project=P picks the project when the name
// is bound to the consumer in several); everyone else gets 404 whether or
// not the name exists. With ?wait=D and/or ?after_version=N it is a watch:
// it answers once the version is newer than N (0 when absent), or 304
// after D (0 when absent: at once).
func (s *Server) deliver(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	req := daemon.DeliveryRequest{Name: r.PathValue("name"), Key: q.Get("key"), Project: q.Get("project")}
	p := daemon.PrincipalFrom(r.Context())
	var d daemon.Delivery
	var err error
	if q.Has("wait") || q.Has("after_version") {
		d, err = s.watchDelivery(w, r, p, req)
		switch {
		case errors.Is(err, daemon.ErrNotModified):
			w.WriteHeader(http.StatusNotModified)
			return nil
		case err != nil && r.Context().Err() != nil:
			// The client hung up while waiting: nobody to answer, and
			// nothing went wrong here.
			return nil
		}
	} else {
		d, err = s.b.Deliver(r.Context(), p, req)
	}
	if err != nil {
		return err
	}
	defer clear(d.Payload)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(d.Payload)))
	w.Header().Set("X-Coffer-Secret-Version", strconv.Itoa(d.Version))
	w.Header().Set("X-Coffer-Secret-Id", d.SecretID)
	w.WriteHeader(http.StatusOK)
	// The status is sent: a failed write means the client went away, and
	// there is nothing left to tell it.
	_, _ = w.Write(d.Payload)
	return nil
}

// MaxWatchesPerPeer is how many watches (deliveries waiting for a new
// version) one caller — a uid, a CID, a VM — may have at once under the
// default per-caller connection limit. Each holds a connection: at half
// the per-caller limit, a caller's watches leave it (and everyone else)
// slots for its other requests. SetMaxConnsPerPeer keeps that half when
// the limit is set otherwise.
const MaxWatchesPerPeer = DefaultMaxConnsPerPeer / 2

// SetMaxConnsPerPeer tells the server the per-caller connection limit of
// its listeners (--max-connections-per-peer), so that one caller's
// watches take at most half of its share: at least one, and
// MaxWatchesPerPeer when n is 0 (no limit per caller). Call it before
// Serve.
func (s *Server) SetMaxConnsPerPeer(n int) {
	if n <= 0 {
		s.maxWatches = MaxWatchesPerPeer
		return
	}
	s.maxWatches = max(1, n/2)
}

// watchLimit is how many watches one caller may have at once.
func (s *Server) watchLimit() int {
	if s.maxWatches > 0 {
		return s.maxWatches
	}
	return MaxWatchesPerPeer
}

// CodeTooManyWatches answers a watch beyond MaxWatchesPerPeer (429).
const CodeTooManyWatches = "too_many_watches"

// ParseWatch reads a watch's query: wait, a Go duration such as 30s (0s
// up to 5m), and after_version, a version number (0 or more).
func ParseWatch(wait, after string) (time.Duration, int, error) {
	var d time.Duration
	if wait != "" {
		var err error
		if d, err = time.ParseDuration(wait); err != nil {
			return 0, 0, daemon.Invalid(daemon.CodeInvalidWait, "wait must be a duration from 0s to %s, such as 30s", daemon.MaxDeliveryWait)
		}
	}
	n := 0
	if after != "" {
		v, err := strconv.ParseUint(after, 10, 31)
		if err != nil {
			return 0, 0, daemon.Invalid(daemon.CodeInvalidAfterVersion, "after_version must be a version number (0 or more)")
		}
		n = int(v)
	}
	if err := daemon.CheckWatch(d, n); err != nil {
		return 0, 0, err
	}
	return d, n, nil
}

func (s *Server) watchDelivery(w http.ResponseWriter, r *http.Request, p daemon.Principal, req daemon.DeliveryRequest) (daemon.Delivery, error) {
	q := r.URL.Query()
	wait, after, err := ParseWatch(q.Get("wait"), q.Get("after_version"))
	if err != nil {
		return daemon.Delivery{}, err
	}
	if wait > 0 {
		k := keyOf(p)
		s.watchMu.Lock()
		if s.watches == nil {
			s.watches = map[peerKey]int{}
		}
		n := s.watches[k]
		if n >= s.watchLimit() {
			s.watchMu.Unlock()
			return daemon.Delivery{}, errTooManyWatches
		}
		s.watches[k] = n + 1
		s.watchMu.Unlock()
		defer func() {
			s.watchMu.Lock()
			if s.watches[k]--; s.watches[k] <= 0 {
				delete(s.watches, k)
			}
			s.watchMu.Unlock()
		}()
		// The answer may come after the server's write timeout.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + DefaultWriteTimeout))
	}
	// Shutdown ends waits (a 304: nothing changed so far), so that the
	// drain does not wait for them.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.closing, cancel)
	defer stop()
	d, err := s.b.WatchDelivery(ctx, p, req, after, wait)
	if err != nil && ctx.Err() != nil && r.Context().Err() == nil {
		return daemon.Delivery{}, daemon.ErrNotModified
	}
	return d, err
}

var errTooManyWatches = &daemon.Error{Class: daemon.ErrRateLimited, Code: CodeTooManyWatches,
	Message: "too many watches from this caller at once (at most 16): wait for one to end"}
