package api

// K8sWebhook is GET /v1/k8s/webhook-ca: how the Kubernetes webhooks are
// served, for the kubeconfigs kube-apiserver reads (coffer k8s
// webhook-config). Nothing in it is secret: the bearer stays in its file.
type K8sWebhook struct {
	// Server is the listener's base URL, e.g. https://127.0.0.1:8443.
	Server                  string `json:"server"`
	TokenReviewPath         string `json:"token_review_path"`
	SubjectAccessReviewPath string `json:"subject_access_review_path"`
	// CertificateAuthority is the serving certificate in PEM: self-issued,
	// it is its own CA (certificate-authority-data).
	CertificateAuthority string `json:"certificate_authority"`
	// BearerFile and ClientCAFile are how kube-apiserver authenticates to
	// the listener (paths on the daemon's host; either may be empty).
	BearerFile   string   `json:"bearer_file,omitempty"`
	ClientCAFile string   `json:"client_ca_file,omitempty"`
	Audiences    []string `json:"audiences"`
}
