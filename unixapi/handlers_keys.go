package unixapi

import (
	"context"
	"net/http"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/daemon"
)

// KeysBackend is the HSM key management part of the domain.
type KeysBackend interface {
	HSMKeys(ctx context.Context, g daemon.Grant) (daemon.HSMKeys, error)
	RotateKEK(ctx context.Context, g daemon.Grant) (daemon.KEKRotation, error)
	RemoveKEK(ctx context.Context, g daemon.Grant, label string, opts daemon.RemoveKEKOptions) error
	RotateSigningKey(ctx context.Context, g daemon.Grant) (daemon.SigningKeyRotation, error)
}

func (s *Server) keysRoutes() {
	s.handle("GET /v1/hsm/keys", s.hsmKeys)
	s.handle("POST /v1/hsm/kek:rotate", s.rotateKEK)
	s.handle("DELETE /v1/hsm/keks/{label}", s.removeKEK)
	s.handle("POST /v1/hsm/signing-key:rotate", s.rotateSigningKey)
}

func kekRotationWire(r daemon.KEKRotation) api.KEKRotation {
	return api.KEKRotation{
		Target: r.Target, Previous: r.Previous, State: r.State, Rewrapped: r.Rewrapped, Failed: r.Failed,
		Remaining: r.Remaining, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt,
	}
}

func signingKeyWire(k daemon.SigningKey) api.SigningKey {
	return api.SigningKey{
		Label: k.Label, Version: k.Version, Kid: k.Kid, Alg: k.Alg, Current: k.Current, Published: k.Published,
		Tokens: k.Tokens, RetiredAt: k.RetiredAt, RetireAfter: k.RetireAfter,
	}
}

func (s *Server) hsmKeys(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageKeys, daemon.Resource{})
	if err != nil {
		return err
	}
	k, err := s.b.HSMKeys(r.Context(), g)
	if err != nil {
		return err
	}
	out := api.HSMKeys{KEKs: []api.KEKVersion{}, SigningKeys: []api.SigningKey{}}
	for _, v := range k.KEKs {
		out.KEKs = append(out.KEKs, api.KEKVersion{Label: v.Label, Version: v.Version, Current: v.Current, Scheme: v.Scheme, Records: v.Records})
	}
	for _, v := range k.SigningKeys {
		out.SigningKeys = append(out.SigningKeys, signingKeyWire(v))
	}
	if k.Rotation != nil {
		rw := kekRotationWire(*k.Rotation)
		out.Rotation = &rw
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// rotateKEK answers 202: the new KEK is current at once, the re-wrap runs
// in the background (GET /v1/hsm/keys shows its progress).
func (s *Server) rotateKEK(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageKeys, daemon.Resource{})
	if err != nil {
		return err
	}
	var none struct{}
	if err := decodeJSON(w, r, &none, true); err != nil {
		return err
	}
	rot, err := s.b.RotateKEK(r.Context(), g)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/hsm/keys")
	writeJSON(w, http.StatusAccepted, kekRotationWire(rot))
	return nil
}

func (s *Server) removeKEK(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageKeys, daemon.Resource{})
	if err != nil {
		return err
	}
	var opts daemon.RemoveKEKOptions
	switch v := r.URL.Query().Get("force"); v {
	case "", "false":
	case "true":
		opts.Force = true
	default:
		return daemon.Invalid(daemon.CodeInvalidArgument, "force is true or false, not %q", v)
	}
	if err := s.b.RemoveKEK(r.Context(), g, r.PathValue("label"), opts); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) rotateSigningKey(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageKeys, daemon.Resource{})
	if err != nil {
		return err
	}
	var none struct{}
	if err := decodeJSON(w, r, &none, true); err != nil {
		return err
	}
	rot, err := s.b.RotateSigningKey(r.Context(), g)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.SigningKeyRotation{Current: signingKeyWire(rot.Current), Previous: signingKeyWire(rot.Previous)})
	return nil
}
