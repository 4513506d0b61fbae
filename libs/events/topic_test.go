package events

import (
	"errors"
	"strings"
	"testing"
)

func TestTopic(t *testing.T) {
	t.Parallel()
	tests := []struct{ prefix, aggregate, want string }{
		{"distcache", "users", "distcache.users"},
		{"", "users", "distcache.users"},
		{"prod.eu", "org-members", "prod.eu.org-members"},
	}
	for _, tt := range tests {
		if got := Topic(tt.prefix, tt.aggregate); got != tt.want {
			t.Errorf("Topic(%q, %q) = %q, want %q", tt.prefix, tt.aggregate, got, tt.want)
		}
		agg, ok := AggregateFromTopic(tt.prefix, tt.want)
		if !ok || agg != tt.aggregate {
			t.Errorf("AggregateFromTopic(%q, %q) = %q, %v, want %q, true", tt.prefix, tt.want, agg, ok, tt.aggregate)
		}
	}
	for _, topic := range []string{"other.users", "distcache.", "distcache.a.b", "distcacheusers"} {
		if agg, ok := AggregateFromTopic("distcache", topic); ok {
			t.Errorf("AggregateFromTopic(distcache, %q) = %q, true, want false", topic, agg)
		}
	}
}

func TestValidateAggregateName(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"users", "Users_2", "org-members", strings.Repeat("a", MaxAggregateNameLen)} {
		if err := ValidateAggregateName(ok); err != nil {
			t.Errorf("ValidateAggregateName(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a.b", "a b", "a/b", "ü", "a:b", strings.Repeat("a", MaxAggregateNameLen+1)} {
		err := ValidateAggregateName(bad)
		var ve *ValidationError
		if !errors.As(err, &ve) || ve.Field != FieldAggregate {
			t.Errorf("ValidateAggregateName(%q) = %v, want *ValidationError for %q", bad, err, FieldAggregate)
		}
	}
	// The longest aggregate under the longest prefix still makes a legal topic.
	prefix := strings.Repeat("p", maxTopicLen-MaxAggregateNameLen-1)
	if err := ValidateTopicPrefix(prefix); err != nil {
		t.Fatalf("ValidateTopicPrefix(longest) = %v", err)
	}
	if n := len(Topic(prefix, strings.Repeat("a", MaxAggregateNameLen))); n > maxTopicLen {
		t.Fatalf("longest topic is %d bytes, Kafka allows %d", n, maxTopicLen)
	}
}

func TestValidateTopicPrefix(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"distcache", "prod.eu", "a_b-c"} {
		if err := ValidateTopicPrefix(ok); err != nil {
			t.Errorf("ValidateTopicPrefix(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", ".x", "x.", "a b", "a/b", strings.Repeat("p", maxTopicLen-MaxAggregateNameLen)} {
		if err := ValidateTopicPrefix(bad); !errors.Is(err, ErrInvalidTopicPrefix) {
			t.Errorf("ValidateTopicPrefix(%q) = %v, want ErrInvalidTopicPrefix", bad, err)
		}
	}
}
