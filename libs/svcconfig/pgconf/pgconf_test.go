package pgconf_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/distcache/distcache/libs/svcconfig/envconf"
	"github.com/distcache/distcache/libs/svcconfig/pgconf"
)

func TestURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		value    string
		required bool
		wantErr  string // "" valid
	}{
		{name: "url", value: "postgres://u:s3cret@db:5432/app?sslmode=require", required: true},
		{name: "key=value", value: "host=db user=u password=s3cret dbname=app", required: true},
		{name: "optional unset", value: ""},
		{name: "required unset", value: "", required: true, wantErr: "required (a PostgreSQL URL)"},
		{name: "bad port", value: "postgres://u:s3cret@db:notaport/app", wantErr: "not a valid PostgreSQL connection string"},
		{name: "missing CA file", value: "postgres://u:s3cret@db/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem", wantErr: "not a valid PostgreSQL connection string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := envconf.New("SVC", func(k string) string {
				if k == "SVC_DATABASE_URL" {
					return tt.value
				}
				return ""
			})
			got := pgconf.URL(r, "SVC_DATABASE_URL", tt.required, "a PostgreSQL URL")
			if got != tt.value {
				t.Errorf("URL = %q, want %q", got, tt.value)
			}
			err := r.Err()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ve *envconf.VarError
			if !errors.As(err, &ve) || ve.Var != "SVC_DATABASE_URL" || !strings.Contains(ve.Reason, tt.wantErr) {
				t.Fatalf("Err() = %v, want a *VarError for SVC_DATABASE_URL saying %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}
