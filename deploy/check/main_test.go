package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	badCompose := filepath.Join(dir, "compose.yaml")
	if err := os.WriteFile(badCompose, []byte("services:\n  redis:\n    image: redis\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	badManifest := "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\nautomountToken: false\n"
	tests := []struct {
		name     string
		args     []string
		stdin    string
		wantErr  bool
		wantOut  string
		usageErr bool
	}{
		{name: "no arguments", args: nil, wantErr: true, usageErr: true},
		{name: "unknown command", args: []string{"lint", "x"}, wantErr: true, usageErr: true},
		{name: "env needs files", args: []string{"env", "services"}, wantErr: true, usageErr: true},
		{name: "repository compose file", args: []string{"compose", filepath.Join("..", "compose", "compose.yaml")}, wantOut: "ok   compose"},
		{name: "bad compose file", args: []string{"compose", badCompose}, wantErr: true, wantOut: "no healthcheck"},
		{name: "bad manifest on stdin", args: []string{"manifests", "-"}, stdin: badManifest, wantErr: true, wantOut: "automountToken"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			err := run(context.Background(), tt.args, strings.NewReader(tt.stdin), &out)
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("run(%q) = %v, want error: %v (output %q)", tt.args, err, tt.wantErr, out.String())
			}
			if got := errors.Is(err, errUsage); got != tt.usageErr {
				t.Errorf("run(%q) usage error = %v, want %v", tt.args, got, tt.usageErr)
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("run(%q) printed %q, want it to contain %q", tt.args, out.String(), tt.wantOut)
			}
		})
	}
}
