package api

// ImportKey is GET /v1/hsm/import-key: the public half of the host's
// import key, to seal secrets to it (coffer seal --to).
type ImportKey struct {
	PublicKeyPEM string `json:"public_key_pem"`
	Fingerprint  string `json:"fingerprint"` // SHA256:<hex of the PKIX DER>
	Algorithm    string `json:"algorithm"`   // RSA-OAEP-256
}
