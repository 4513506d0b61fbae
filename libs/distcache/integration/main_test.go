package integration_test

import (
	"os"
	"testing"

	"github.com/distcache/distcache/tools/devstacktest"
)

func TestMain(m *testing.M) {
	if os.Getenv(edgeEnv) == "1" { // this binary was started as the edge process of a snapshot test
		runEdgeProcess()
	}
	devstacktest.Main(m)
}
