package webhook

import (
	"encoding/json"
	"strings"
	"testing"
)

func FuzzTokenReviewDecode(f *testing.F) {
	f.Add([]byte(trBody))
	f.Add([]byte(`{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"","audiences":null}}`))
	f.Add([]byte(`{"apiVersion":"authentication.k8s.io/v1beta1","kind":"TokenReview"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := DecodeTokenReview(data)
		if err != nil {
			if tr != nil {
				t.Fatal("a review with an error")
			}
			if strings.Contains(err.Error(), string(data)) && len(data) > 8 {
				t.Fatalf("the error quotes the body: %v", err)
			}
			return
		}
		if tr.APIVersion != authnAPIVersion || tr.Kind != "TokenReview" {
			t.Fatalf("accepted %q %q", tr.APIVersion, tr.Kind)
		}
		// What was accepted round-trips.
		b, err := json.Marshal(tr)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeTokenReview(b)
		if err != nil || again.Spec.Token != tr.Spec.Token || len(again.Spec.Audiences) != len(tr.Spec.Audiences) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzSubjectAccessReviewDecode(f *testing.F) {
	f.Add([]byte(`{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"user":"u","resourceAttributes":{"namespace":"a","verb":"get","version":"v1","resource":"pods","name":"x"}}}`))
	f.Add([]byte(`{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"nonResourceAttributes":{"path":"/healthz","verb":"get"}}}`))
	f.Add([]byte(`{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"extra":{"a":["b"]},"groups":["g"],"resourceAttributes":{"group":"apps","namespace":"a/b","resource":"namespaces"}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		sar, err := DecodeSubjectAccessReview(data)
		if err != nil {
			return
		}
		ra, nra := sar.Spec.ResourceAttributes, sar.Spec.NonResourceAttributes
		if (ra == nil) == (nra == nil) {
			t.Fatal("accepted without exactly one kind of attributes")
		}
		if ra != nil {
			p := RequestPath(ra)
			if !strings.HasPrefix(p, "/api/") && !strings.HasPrefix(p, "/apis/") {
				t.Fatalf("path %q", p)
			}
			// A value never adds segments: at most 8 of them.
			if n := strings.Count(p, "/"); n > 8 {
				t.Fatalf("path %q has %d segments", p, n)
			}
		}
	})
}
