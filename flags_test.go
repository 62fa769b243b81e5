package main

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestHandlersFlags(t *testing.T) {
	h := newAPITestServer(t).handler()
	tests := []struct {
		name string
		key  string
		want string
	}{
		{"client key leaves out server-only features", apiClientKey, apiFlagsClientA},
		{"server key sees every flag", apiServerKey, apiFlagsServerA},
		{"client key with hide_disabled_flags", hiddenClientKey, apiFlagsClientB},
		{"server key ignores hide_disabled_flags", hiddenServerKey, apiFlagsServerB},
	}
	for _, tt := range tests {
		for _, path := range []string{"/api/v1/flags/", "/api/v1/flags"} {
			t.Run(tt.name+" "+path, func(t *testing.T) {
				rec := callHandler(t, h, "GET", path, withKey(tt.key), "")
				if rec.Code != http.StatusOK {
					t.Fatalf("GET %s = %d %s; want 200", path, rec.Code, rec.Body)
				}
				if diff := cmp.Diff(apiJSON(t, []byte(tt.want)), apiJSON(t, rec.Body.Bytes())); diff != "" {
					t.Errorf("GET %s body mismatch (-want +got):\n%s", path, diff)
				}
			})
		}
	}
}

func TestHandlersFlagsFeature(t *testing.T) {
	h := newAPITestServer(t).handler()
	tests := []struct {
		name    string
		key     string
		feature string
		want    string // the flag object; empty for a 404
	}{
		{"found", apiClientKey, "banner",
			`{"feature":{"id":101,"name":"banner","type":"STANDARD"},"enabled":true,"feature_state_value":"blue"}`},
		{"integer value", apiClientKey, "max_items",
			`{"feature":{"id":102,"name":"max_items","type":"STANDARD"},"enabled":true,"feature_state_value":42}`},
		{"float value", apiClientKey, "price",
			`{"feature":{"id":108,"name":"price","type":"STANDARD"},"enabled":true,"feature_state_value":10.0}`},
		{"null value", apiClientKey, "empty_value",
			`{"feature":{"id":106,"name":"empty_value","type":"STANDARD"},"enabled":true,"feature_state_value":null}`},
		{"disabled but not hidden", apiClientKey, "dark_mode",
			`{"feature":{"id":105,"name":"dark_mode","type":"STANDARD"},"enabled":false,"feature_state_value":true}`},
		{"server-only with server key", apiServerKey, "secret_algo",
			`{"feature":{"id":103,"name":"secret_algo","type":"STANDARD"},"enabled":true,"feature_state_value":"v2"}`},
		{"hidden disabled with server key", hiddenServerKey, "off",
			`{"feature":{"id":202,"name":"off","type":"STANDARD"},"enabled":false,"feature_state_value":"no"}`},
		{"unknown", apiClientKey, "nope", ""},
		{"unknown with server key", apiServerKey, "nope", ""},
		{"empty name", apiClientKey, "", ""},
		{"case matters", apiClientKey, "Banner", ""},
		{"server-only with client key", apiClientKey, "secret_algo", ""},
		{"hidden disabled with client key", hiddenClientKey, "off", ""},
		{"server-only with hiding client key", hiddenClientKey, "server_only", ""},
	}
	for _, tt := range tests {
		for _, path := range []string{"/api/v1/flags/", "/api/v1/flags"} {
			t.Run(tt.name+" "+path, func(t *testing.T) {
				target := path + "?feature=" + urlQueryEscape(tt.feature)
				rec := callHandler(t, h, "GET", target, withKey(tt.key), "")
				if tt.want == "" {
					apiError(t, rec, http.StatusNotFound, "not_found")
					wantBody := fmt.Sprintf(`{"status":"not_found","message":"feature '%s' not found"}`, tt.feature)
					if diff := cmp.Diff(apiJSON(t, []byte(wantBody)), apiJSON(t, rec.Body.Bytes())); diff != "" {
						t.Errorf("GET %s body mismatch (-want +got):\n%s", target, diff)
					}
					return
				}
				if rec.Code != http.StatusOK {
					t.Fatalf("GET %s = %d %s; want 200", target, rec.Code, rec.Body)
				}
				if diff := cmp.Diff(apiJSON(t, []byte(tt.want)), apiJSON(t, rec.Body.Bytes())); diff != "" {
					t.Errorf("GET %s body mismatch (-want +got):\n%s", target, diff)
				}
				if got := rec.Header().Get(updatedAtHeader); got == "" {
					t.Errorf("GET %s: no %s header", target, updatedAtHeader)
				}
			})
		}
	}
}

func TestHandlersEnvironmentDocument(t *testing.T) {
	h := newAPITestServer(t).handler()
	for _, path := range []string{"/api/v1/environment-document/", "/api/v1/environment-document"} {
		t.Run("server key "+path, func(t *testing.T) {
			rec := callHandler(t, h, "GET", path, withKey(apiServerKey), "")
			if rec.Code != http.StatusOK {
				t.Fatalf("GET %s = %d %s; want 200", path, rec.Code, rec.Body)
			}
			if got := rec.Body.String(); got != apiDocument {
				t.Errorf("GET %s body is not the document as received:\n%.500s", path, got)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q; want application/json", ct)
			}
		})
		t.Run("client key "+path, func(t *testing.T) {
			rec := callHandler(t, h, "GET", path, withKey(apiClientKey), "")
			apiError(t, rec, http.StatusUnauthorized, "unauthorized")
			if strings.Contains(rec.Body.String(), "feature_states") {
				t.Errorf("client key got document content: %.300s", rec.Body)
			}
		})
	}
	t.Run("server key gzip", func(t *testing.T) {
		rec := callHandler(t, h, "GET", "/api/v1/environment-document/", map[string]string{
			"X-Environment-Key": apiServerKey, "Accept-Encoding": "gzip"}, "")
		if got := string(apiGunzip(t, rec)); got != apiDocument {
			t.Errorf("gunzipped document is not the document as received:\n%.500s", got)
		}
	})
}

func TestHandlersUpdatedAtHeader(t *testing.T) {
	h := newAPITestServer(t).handler()
	tests := []struct {
		name, method, path, key, body, want string
	}{
		{"flags", "GET", "/api/v1/flags/", apiClientKey, "", apiDocumentUpdatedAt},
		{"flags no slash", "GET", "/api/v1/flags", apiServerKey, "", apiDocumentUpdatedAt},
		{"flags whole second", "GET", "/api/v1/flags/", hiddenClientKey, "", hiddenDocumentUpdatedAt},
		{"feature", "GET", "/api/v1/flags/?feature=banner", apiClientKey, "", apiDocumentUpdatedAt},
		{"identities post", "POST", "/api/v1/identities/", apiClientKey, `{"identifier":"a"}`, apiDocumentUpdatedAt},
		{"identities post no slash", "POST", "/api/v1/identities", hiddenClientKey, `{"identifier":"a"}`, hiddenDocumentUpdatedAt},
		{"identities get", "GET", "/api/v1/identities/?identifier=a", apiClientKey, "", apiDocumentUpdatedAt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := callHandler(t, h, tt.method, tt.path, withKey(tt.key), tt.body)
			if rec.Code != http.StatusOK {
				t.Fatalf("%s %s = %d %s; want 200", tt.method, tt.path, rec.Code, rec.Body)
			}
			got := rec.Header().Get(updatedAtHeader)
			if got != tt.want {
				t.Errorf("%s = %q; want %q", updatedAtHeader, got, tt.want)
			}
			if _, err := strconv.ParseFloat(got, 64); err != nil || !strings.Contains(got, ".") {
				t.Errorf("%s = %q; want a float of Unix seconds", updatedAtHeader, got)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q; want application/json", ct)
			}
		})
	}
}
