package envcheck

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	services := filepath.Join(root, "services")
	write(t, filepath.Join(services, "core-publisher", "internal", "config", "config.go"),
		"package config\nconst EnvHTTPAddr = \"PUBLISHER_HTTP_ADDR\"\n")
	// A name that only a test mentions is not read by the service.
	write(t, filepath.Join(services, "core-publisher", "main_test.go"), "package main\nvar _ = \"PUBLISHER_TEST_ONLY\"\n")
	write(t, filepath.Join(services, "cache-producer", "main.go"), "package main\nvar _ = \"PRODUCER_REDIS_ADDRS\"\n")
	write(t, filepath.Join(services, "control-plane", "main.go"), "package main\nvar _ = \"CONTROLPLANE_GRPC_ADDR\"\n")
	write(t, filepath.Join(root, "examples", "edge-service", "main.go"), "package main\nvar _ = getenv(\"EDGE_REDIS_ADDR\")\n")
	// The shared configuration library: the producer reads KAFKA_* through kafkaconf with its
	// prefix; the control-plane imports envconf only, which names no variable.
	write(t, filepath.Join(root, "libs", "svcconfig", "kafkaconf", "kafkaconf.go"),
		"package kafkaconf\nconst VarBrokers = \"KAFKA_BROKERS\"\n")
	write(t, filepath.Join(root, "libs", "svcconfig", "kafkaconf", "kafkaconf_test.go"),
		"package kafkaconf\nvar _ = \"KAFKA_TEST_ONLY\"\n")
	write(t, filepath.Join(root, "libs", "svcconfig", "envconf", "envconf.go"), "package envconf\n")
	write(t, filepath.Join(services, "cache-producer", "internal", "config", "config.go"),
		"package config\nimport \"github.com/distcache/distcache/libs/svcconfig/kafkaconf\"\nvar r = envconf.New(\"PRODUCER\", nil)\n")
	write(t, filepath.Join(services, "control-plane", "internal", "config", "config.go"),
		"package config\nimport \"github.com/distcache/distcache/libs/svcconfig/envconf\"\nvar r = envconf.New(\"CONTROLPLANE\", nil)\n")
	// The publisher imports kafkaconf but never gives its prefix to the library.
	write(t, filepath.Join(services, "core-publisher", "internal", "kafka", "kafka.go"),
		"package kafka\nimport \"github.com/distcache/distcache/libs/svcconfig/kafkaconf\"\n")

	tests := []struct {
		name     string
		manifest string
		wantBad  []string // variables reported
	}{
		{name: "all known", manifest: "env:\n- name: PUBLISHER_HTTP_ADDR\n- name: PRODUCER_REDIS_ADDRS\n- name: CONTROLPLANE_GRPC_ADDR\n"},
		{name: "read through the shared library", manifest: "PRODUCER_KAFKA_BROKERS: k:9092\n"},
		{name: "shared name of a test only", manifest: "PRODUCER_KAFKA_TEST_ONLY: x\n", wantBad: []string{"PRODUCER_KAFKA_TEST_ONLY"}},
		{name: "shared package not imported", manifest: "CONTROLPLANE_KAFKA_BROKERS: k:9092\n", wantBad: []string{"CONTROLPLANE_KAFKA_BROKERS"}},
		{name: "shared package without the prefix", manifest: "PUBLISHER_KAFKA_BROKERS: k:9092\n", wantBad: []string{"PUBLISHER_KAFKA_BROKERS"}},
		{name: "the example edge service's", manifest: "EDGE_REDIS_ADDR: redis:6379\n"},
		{name: "the example edge service's, misspelt", manifest: "EDGE_REDIS_ADRESS: redis:6379\n", wantBad: []string{"EDGE_REDIS_ADRESS"}},
		{name: "misspelt", manifest: "env:\n- name: PUBLISHER_HTTP_ADR\n", wantBad: []string{"PUBLISHER_HTTP_ADR"}},
		{name: "test-only name", manifest: "PUBLISHER_TEST_ONLY: x\n", wantBad: []string{"PUBLISHER_TEST_ONLY"}},
		{name: "wrong service", manifest: "PRODUCER_GRPC_ADDR: x\nCONTROLPLANE_REDIS_ADDRS: y\n", wantBad: []string{"PRODUCER_GRPC_ADDR", "CONTROLPLANE_REDIS_ADDRS"}},
		{name: "prefix alone is not a variable", manifest: "prefix PUBLISHER_ and PRODUCER_\n"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := filepath.Join(root, "m", strings.Repeat("x", i+1)+".yaml")
			write(t, f, tt.manifest)
			err := Check(services, f)
			if len(tt.wantBad) == 0 {
				if err != nil {
					t.Fatalf("Check() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrUnknownVariable) {
				t.Fatalf("Check() = %v, want ErrUnknownVariable", err)
			}
			for _, v := range tt.wantBad {
				if !strings.Contains(err.Error(), v+" ") {
					t.Errorf("Check() = %q, want it to name %s", err, v)
				}
			}
		})
	}
}

// TestRepository checks the real compose file against the real services.
func TestRepository(t *testing.T) {
	t.Parallel()
	if err := Check(filepath.Join("..", "..", "..", "services"), filepath.Join("..", "..", "compose", "compose.yaml")); err != nil {
		t.Fatal(err)
	}
}
