package api

import "time"

// HSMKeys is GET /v1/hsm/keys.
type HSMKeys struct {
	KEKs        []KEKVersion `json:"keks"`
	SigningKeys []SigningKey `json:"signing_keys"`
	Rotation    *KEKRotation `json:"kek_rotation,omitempty"`
}

// KEKVersion is one KEK on the token and how many sealed records it wraps.
type KEKVersion struct {
	Label   string `json:"label"`
	Version int    `json:"version"`
	Current bool   `json:"current"`
	Scheme  string `json:"scheme"` // aes-256-gcm or rsa-3072-oaep-sha256
	Records int    `json:"records"`
}

// SigningKey is one signing key on the token. Tokens counts the live
// OAuth2 access tokens (JWTs) it signed. A retired key is published (in
// the JWKS) until RetireAfter.
type SigningKey struct {
	Label       string     `json:"label"`
	Version     int        `json:"version"`
	Kid         string     `json:"kid"`
	Alg         string     `json:"alg"` // ES256 or PS256
	Current     bool       `json:"current"`
	Published   bool       `json:"published"`
	Tokens      int        `json:"tokens"`
	RetiredAt   *time.Time `json:"retired_at,omitempty"`
	RetireAfter *time.Time `json:"retire_after,omitempty"`
}

// KEKRotation is the progress of the last KEK rotation: State is
// "running", "interrupted" (it resumes at the next start or maintenance
// sweep) or "done"; Remaining counts sealed records still wrapped by
// another KEK; Failed those that did not open.
type KEKRotation struct {
	Target     string     `json:"target"`
	Previous   string     `json:"previous,omitempty"`
	State      string     `json:"state"`
	Rewrapped  int        `json:"rewrapped"`
	Failed     int        `json:"failed"`
	Remaining  int        `json:"remaining"`
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// SigningKeyRotation is POST /v1/hsm/signing-key:rotate.
type SigningKeyRotation struct {
	Current  SigningKey `json:"current"`
	Previous SigningKey `json:"previous"`
}
