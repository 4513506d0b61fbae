package devstack

import (
	"bytes"
	"context"
	"os/exec"
)

// runCommand runs a short-lived program and returns its combined output.
func runCommand(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}
