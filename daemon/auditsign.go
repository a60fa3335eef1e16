package daemon

import "context"

// SignAudit signs a SHA-256 digest (an audit log checkpoint) with the HSM
// signing key and returns the signature in its JWS form (ES256 r||s in
// its low-S form, which is the only one audit verification accepts, or
// PS256) and the kid of that key, the same kid the JWK set publishes.
func (s *Service) SignAudit(ctx context.Context, digest []byte) ([]byte, string, error) {
	s.sig.mint.RLock() // the key cannot change between the kid and the signature
	defer s.sig.mint.RUnlock()
	pub := s.keys.SigningPublicKey()
	kid := KeyID(pub)
	sig, err := s.keys.Sign(ctx, digest)
	if err != nil {
		return nil, "", hsmErr(err)
	}
	if jwsAlgOf(pub) == algES256 {
		sig = es256ToLowS(sig)
	}
	return sig, kid, nil
}
