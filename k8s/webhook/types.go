package webhook

// The wire types of the two reviews, as kube-apiserver sends and reads
// them (authentication.k8s.io/v1 TokenReview, authorization.k8s.io/v1
// SubjectAccessReview): only the members coffer reads or writes.
//
// They are written here instead of imported from k8s.io/api because those
// types pull k8s.io/apimachinery (runtime, meta/v1, klog, json-iterator,
// CBOR, ...) into the one binary every host runs: 8 MB of executable and
// 15 MiB of idle RSS for two small JSON documents. The tests decode
// k8s.io/api's own types into these and these into k8s.io/api's
// (TestWireMatchesK8sAPI), so a renamed member fails there.

// TokenReview is an authentication.k8s.io/v1 TokenReview request.
type TokenReview struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Spec       TokenReviewSpec `json:"spec"`
}

// TokenReviewSpec is what is to be authenticated.
type TokenReviewSpec struct {
	Token     string   `json:"token"`
	Audiences []string `json:"audiences,omitempty"`
}

// UserInfo is the user a TokenReview names.
type UserInfo struct {
	Username string              `json:"username,omitempty"`
	UID      string              `json:"uid,omitempty"`
	Groups   []string            `json:"groups,omitempty"`
	Extra    map[string][]string `json:"extra,omitempty"`
}

// SubjectAccessReview is an authorization.k8s.io/v1 SubjectAccessReview
// request.
type SubjectAccessReview struct {
	APIVersion string                  `json:"apiVersion"`
	Kind       string                  `json:"kind"`
	Spec       SubjectAccessReviewSpec `json:"spec"`
}

// SubjectAccessReviewSpec is the request to decide: exactly one of
// ResourceAttributes and NonResourceAttributes, and who asks.
type SubjectAccessReviewSpec struct {
	ResourceAttributes    *ResourceAttributes    `json:"resourceAttributes,omitempty"`
	NonResourceAttributes *NonResourceAttributes `json:"nonResourceAttributes,omitempty"`
	User                  string                 `json:"user,omitempty"`
	Groups                []string               `json:"groups,omitempty"`
	Extra                 map[string][]string    `json:"extra,omitempty"`
	UID                   string                 `json:"uid,omitempty"`
}

// ResourceAttributes describe a request on an API resource. The field
// and label selectors kube-apiserver may add are not read: an access rule
// matches a path, and a selector narrows what a request returns.
type ResourceAttributes struct {
	Namespace   string `json:"namespace,omitempty"`
	Verb        string `json:"verb,omitempty"`
	Group       string `json:"group,omitempty"`
	Version     string `json:"version,omitempty"`
	Resource    string `json:"resource,omitempty"`
	Subresource string `json:"subresource,omitempty"`
	Name        string `json:"name,omitempty"`
}

// NonResourceAttributes describe a request on a path that is no resource
// (/healthz, /version, ...).
type NonResourceAttributes struct {
	Path string `json:"path,omitempty"`
	Verb string `json:"verb,omitempty"`
}

// SubjectAccessReviewStatus is the decision. coffer never allows: it
// denies, or has no opinion (allowed and denied both false).
type SubjectAccessReviewStatus struct {
	Allowed         bool   `json:"allowed"`
	Denied          bool   `json:"denied,omitempty"`
	Reason          string `json:"reason,omitempty"`
	EvaluationError string `json:"evaluationError,omitempty"`
}
