package signer

import "github.com/coffer-hsm/coffer/k8s/internal/peer"

// allowed says whether a peer uid may call the signer: root (as
// kube-apiserver usually runs), the daemon's own user, and
// Options.AllowUIDs. Whoever may connect may have any ServiceAccount
// token signed.
func (s *Server) allowed(uid uint32) bool { return peer.Allowed(uid, s.opts.AllowUIDs) }
