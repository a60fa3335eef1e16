package api

// ImportBodyLimit is the body limit of POST /v1/projects/{p}/secrets:import:
// a sealed file carries its payload base64-encoded twice (in the sealed
// contents, then as ciphertext in the file), so the file of a payload
// that fits a create request is larger than BodyLimit.
const ImportBodyLimit = 16 << 10

// ImportKey is GET /v1/hsm/import-key: the public half of the host's
// import key, to seal secrets to it (coffer seal --to).
type ImportKey struct {
	PublicKeyPEM string `json:"public_key_pem"`
	Fingerprint  string `json:"fingerprint"` // SHA256:<hex of the PKIX DER>
	Algorithm    string `json:"algorithm"`   // RSA-OAEP-256
}
