package daemon

import "context"

// SignAudit signs a SHA-256 digest (an audit log checkpoint) with the HSM
// signing key and returns the raw r||s signature and the kid of that key,
// the same kid the JWK set publishes.
func (s *Service) SignAudit(ctx context.Context, digest []byte) ([]byte, string, error) {
	s.sig.mint.RLock() // the key cannot change between the kid and the signature
	defer s.sig.mint.RUnlock()
	pub := s.keys.SigningPublicKey()
	sig, err := s.keys.Sign(ctx, digest)
	if err != nil {
		return nil, "", hsmErr(err)
	}
	return sig, KeyID(pub), nil
}
