// Package tlstest gives the configuration tests throwaway PEM files: the local stack's test CA
// and a certificate and key signed by it (devstacktest.TLSFiles, the one generator of test
// certificates), plus a file that holds no PEM block.
package tlstest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/distcache/distcache/tools/devstacktest"
)

// Files are the paths of the PEM files Write wrote.
type Files struct {
	CA, Cert, Key string
	// NotPEM is a file that holds no PEM block.
	NotPEM string
}

// Write writes the files into directories of t's. The package's TestMain must be
// devstacktest.Main, which removes them.
func Write(t testing.TB) Files {
	t.Helper()
	tf := devstacktest.TLSFiles(t)
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return Files{CA: tf.CAFile, Cert: tf.CertFile, Key: tf.KeyFile, NotPEM: notPEM}
}
