package envconf_test

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/distcache/distcache/libs/svcconfig/envconf"
)

func reader(env map[string]string) *envconf.Reader {
	return envconf.New("SVC", func(k string) string { return env[k] })
}

func TestName(t *testing.T) {
	t.Parallel()
	r := reader(nil)
	if got := r.Name("KAFKA_BROKERS"); got != "SVC_KAFKA_BROKERS" {
		t.Errorf("Name = %q, want SVC_KAFKA_BROKERS", got)
	}
	if got := r.Prefix(); got != "SVC" {
		t.Errorf("Prefix = %q, want SVC", got)
	}
}

// Every typed read returns its value when valid, its default when unset or
// refused, and records one *VarError naming the variable for a refusal.
func TestTypedReads(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		value   string // of SVC_X; "" unset
		read    func(r *envconf.Reader) any
		want    any
		wantErr bool
	}{
		{"string", " v ", func(r *envconf.Reader) any { return r.String("SVC_X", "d") }, "v", false},
		{"string default", "", func(r *envconf.Reader) any { return r.String("SVC_X", "d") }, "d", false},
		{"required", "", func(r *envconf.Reader) any { return r.Required("SVC_X", "hint") }, "", true},
		{"secret keeps spaces", " pw ", func(r *envconf.Reader) any { return r.Secret("SVC_X") }, " pw ", false},
		{"bool", "true", func(r *envconf.Reader) any { return r.Bool("SVC_X", false) }, true, false},
		{"bool default", "", func(r *envconf.Reader) any { return r.Bool("SVC_X", true) }, true, false},
		{"bool refused", "yes please", func(r *envconf.Reader) any { return r.Bool("SVC_X", true) }, true, true},
		{"int", "42", func(r *envconf.Reader) any { return r.Int("SVC_X", 1, 0, 100) }, 42, false},
		{"int over", "101", func(r *envconf.Reader) any { return r.Int("SVC_X", 1, 0, 100) }, 1, true},
		{"int text", "many", func(r *envconf.Reader) any { return r.Int("SVC_X", 1, 0, 100) }, 1, true},
		{"int64", "-5", func(r *envconf.Reader) any { return r.Int64("SVC_X", 0, -10, 10) }, int64(-5), false},
		{"duration", "250ms", func(r *envconf.Reader) any { return r.Duration("SVC_X", time.Second, time.Millisecond) }, 250 * time.Millisecond, false},
		{"duration under", "1ms", func(r *envconf.Reader) any { return r.Duration("SVC_X", time.Second, time.Second) }, time.Second, true},
		{"duration text", "soon", func(r *envconf.Reader) any { return r.Duration("SVC_X", time.Second, 0) }, time.Second, true},
		{"list", " a, ,b ,", func(r *envconf.Reader) any { return r.List("SVC_X") }, []string{"a", "b"}, false},
		{"list unset", "", func(r *envconf.Reader) any { return r.List("SVC_X") }, []string(nil), false},
		{"host:port", ":8080", func(r *envconf.Reader) any { return r.HostPort("SVC_X", "d:1") }, ":8080", false},
		{"host:port refused", "8080", func(r *envconf.Reader) any { return r.HostPort("SVC_X", "d:1") }, "8080", true},
		{"host:port bad port", "h:99999", func(r *envconf.Reader) any { return r.HostPort("SVC_X", "d:1") }, "h:99999", true},
		{"host:ports", "a:1, b:2", func(r *envconf.Reader) any { return r.HostPorts("SVC_X") }, []string{"a:1", "b:2"}, false},
		{"host:ports one bad", "a:1,b", func(r *envconf.Reader) any { return r.HostPorts("SVC_X") }, []string{"a:1"}, true},
		{"required host:ports", " , ", func(r *envconf.Reader) any { return r.RequiredHostPorts("SVC_X", "hint") }, []string(nil), true},
		{"file", file, func(r *envconf.Reader) any { return r.File("SVC_X") }, file, false},
		{"file missing", "/nonexistent/f", func(r *envconf.Reader) any { return r.File("SVC_X") }, "/nonexistent/f", true},
		{"file is a directory", os.TempDir(), func(r *envconf.Reader) any { return r.File("SVC_X") }, os.TempDir(), true},
		{"one of", "text", func(r *envconf.Reader) any { return r.OneOf("SVC_X", "json", "json", "text") }, "text", false},
		{"one of any case", "Scram-Sha-256", func(r *envconf.Reader) any { return r.OneOf("SVC_X", "", "SCRAM-SHA-256") }, "SCRAM-SHA-256", false},
		{"one of refused", "xml", func(r *envconf.Reader) any { return r.OneOf("SVC_X", "json", "json", "text") }, "json", true},
		{"log level", "warn", func(r *envconf.Reader) any { return r.LogLevel("SVC_X", slog.LevelInfo) }, slog.LevelWarn, false},
		{"log level refused", "loud", func(r *envconf.Reader) any { return r.LogLevel("SVC_X", slog.LevelInfo) }, slog.LevelInfo, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := reader(map[string]string{"SVC_X": tt.value})
			if got := tt.read(r); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
			err := r.Err()
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Err() = %v, want nil", err)
				}
				return
			}
			var ve *envconf.VarError
			if !errors.As(err, &ve) || ve.Var != "SVC_X" || !errors.Is(err, envconf.ErrInvalid) {
				t.Fatalf("Err() = %v, want a *VarError for SVC_X matching ErrInvalid", err)
			}
			if !strings.HasPrefix(err.Error(), "SVC_X: ") {
				t.Errorf("Err() = %q, want it to start with the variable's name", err)
			}
		})
	}
}

func TestErrorsAreCollected(t *testing.T) {
	t.Parallel()
	r := reader(map[string]string{"SVC_A": "x", "SVC_B": "y"})
	r.Int("SVC_A", 0, 0, 1)
	r.Bool("SVC_B", false)
	r.Fail("SVC_C", "is %s", "odd")
	r.Add(nil)
	r.Add(&envconf.VarError{Var: "SVC_D", Reason: "bad"})
	err := r.Err()
	for _, want := range []string{"SVC_A: ", "SVC_B: ", "SVC_C: is odd", "SVC_D: bad"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Err() = %v, want it to hold %q", err, want)
		}
	}
	if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != 4 {
		t.Errorf("Err() joins %d errors, want 4 (nil is not one)", n)
	}
}

func TestMask(t *testing.T) {
	t.Parallel()
	if got := envconf.Mask(""); got != "" {
		t.Errorf("Mask(\"\") = %q, want empty (unset stays visible as unset)", got)
	}
	if got := envconf.Mask("hunter2"); got != envconf.Masked {
		t.Errorf("Mask = %q, want %q", got, envconf.Masked)
	}
}

func TestMaskURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"", ""},
		{"postgres://u:p@h/db", "postgres://u:%2A%2A%2A%2A@h/db"},
		{"postgres://u@h/db", "postgres://u@h/db"},
		{"postgres://h/db?password=p&sslmode=require", "postgres://h/db?password=%2A%2A%2A%2A&sslmode=require"},
		{"host=h password=p dbname=d", "host=h password=**** dbname=d"},
		{"postgres://u:p w@@h:port/db", "(unparsable URL, not shown)"},
	}
	for _, tt := range tests {
		if got := envconf.MaskURL(tt.in); got != tt.want {
			t.Errorf("MaskURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestConnPasswordAndMaskIn(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"postgres://u:s3cret@h/db", "s3cret"},
		{"postgres://h/db?password=qp", "qp"},
		{"host=h password='kv' dbname=d", "kv"},
		{"postgres://h/db", ""},
	}
	for _, tt := range tests {
		got := envconf.ConnPassword(tt.in)
		if got != tt.want {
			t.Errorf("ConnPassword(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if msg := envconf.MaskIn("cannot connect to "+tt.in, got); got != "" && strings.Contains(msg, got) {
			t.Errorf("MaskIn left the password in %q", msg)
		}
	}
}
