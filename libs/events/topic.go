package events

import (
	"errors"
	"fmt"
	"strings"
)

// DefaultTopicPrefix is the topic prefix used when none is configured.
const DefaultTopicPrefix = "distcache"

// MaxAggregateNameLen bounds aggregate names so that "<prefix>.<aggregate>"
// stays within Kafka's 249-byte topic name limit for prefixes up to 48 bytes.
const MaxAggregateNameLen = 200

// maxTopicLen is Kafka's limit on topic names.
const maxTopicLen = 249

// Topic returns the topic carrying an aggregate's changes:
// "<prefix>.<aggregate>". An empty prefix means DefaultTopicPrefix.
func Topic(prefix, aggregate string) string {
	if prefix == "" {
		prefix = DefaultTopicPrefix
	}
	return prefix + "." + aggregate
}

// AggregateFromTopic is the inverse of Topic: it returns the aggregate of a
// topic name and whether the topic belongs to prefix.
func AggregateFromTopic(prefix, topic string) (string, bool) {
	if prefix == "" {
		prefix = DefaultTopicPrefix
	}
	agg, ok := strings.CutPrefix(topic, prefix+".")
	if !ok || validateAggregate(agg) != nil {
		return "", false
	}
	return agg, true
}

// ValidateAggregateName checks that name can be an aggregate: 1 to
// MaxAggregateNameLen characters from [A-Za-z0-9_-]. Dots are excluded so
// the topic name splits unambiguously into prefix and aggregate. The error is
// a *ValidationError for FieldAggregate.
func ValidateAggregateName(name string) error {
	if err := validateAggregate(name); err != nil {
		return err
	}
	return nil
}

// validateAggregate returns *ValidationError (not error) so the happy path
// returns a typed nil only through ValidateAggregateName's explicit nil.
func validateAggregate(name string) *ValidationError {
	if name == "" {
		return invalid(FieldAggregate, "empty")
	}
	if len(name) > MaxAggregateNameLen {
		return invalid(FieldAggregate, fmt.Sprintf("%d bytes long, limit %d", len(name), MaxAggregateNameLen))
	}
	for i := 0; i < len(name); i++ {
		if !isAggregateChar(name[i]) {
			return invalid(FieldAggregate, fmt.Sprintf("%q contains %q; allowed are letters, digits, '_' and '-'", name, rune(name[i])))
		}
	}
	return nil
}

func isAggregateChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// ErrInvalidTopicPrefix is matched (errors.Is) by ValidateTopicPrefix's
// errors.
var ErrInvalidTopicPrefix = errors.New("invalid topic prefix")

// MaxTopicPrefixLen is the longest topic prefix: with a dot and the longest
// aggregate name it still makes a legal (249-byte) Kafka topic name.
const MaxTopicPrefixLen = maxTopicLen - MaxAggregateNameLen - 1

// ValidateTopicPrefix checks that prefix can start topic names: 1 to
// MaxTopicPrefixLen characters from [A-Za-z0-9._-], not starting or ending
// with a dot. Errors match ErrInvalidTopicPrefix.
func ValidateTopicPrefix(prefix string) error {
	if prefix == "" {
		return fmt.Errorf("%w: empty", ErrInvalidTopicPrefix)
	}
	if len(prefix) > MaxTopicPrefixLen {
		return fmt.Errorf("%w: %d bytes long, limit %d", ErrInvalidTopicPrefix, len(prefix), MaxTopicPrefixLen)
	}
	if prefix[0] == '.' || prefix[len(prefix)-1] == '.' {
		return fmt.Errorf("%w %q: must not start or end with '.'", ErrInvalidTopicPrefix, prefix)
	}
	for i := 0; i < len(prefix); i++ {
		if c := prefix[i]; !isAggregateChar(c) && c != '.' {
			return fmt.Errorf("%w %q: contains %q; allowed are letters, digits, '.', '_' and '-'", ErrInvalidTopicPrefix, prefix, rune(c))
		}
	}
	return nil
}
