package devstack

import (
	"os"
	"path/filepath"
	"testing"
)

// TestPortTaken: a dev-server start is tried again only for a bind failure
// logged by that start, not for one an earlier start left in the same
// (appended) log.
func TestPortTaken(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "temporal.log")
	earlier := `level=ERROR msg="Failed to start gRPC listener" error="listen tcp 127.0.0.1:40737: bind: address already in use"` + "\n"
	if err := os.WriteFile(path, []byte(earlier), 0o644); err != nil {
		t.Fatal(err)
	}
	at := int64(len(earlier))
	if !portTaken(path, 0) {
		t.Fatal("a bind failure in the log was not seen")
	}
	if portTaken(path, at) {
		t.Fatal("a bind failure before this start's offset was taken for this start's")
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("panic: runtime error: invalid memory address or nil pointer dereference\n"); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	if portTaken(path, at) {
		t.Fatal("a failure other than a bind was taken for one")
	}
	if portTaken(filepath.Join(t.TempDir(), "missing.log"), 0) {
		t.Fatal("a missing log was taken for a bind failure")
	}
}
