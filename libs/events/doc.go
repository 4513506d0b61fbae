// Package events defines distcache's change event and everything that moves
// it: the Envelope and its validation, the mapping to and from a Kafka record
// (franz-go kgo), topic naming, the outbox writer core services call inside
// their own PostgreSQL transaction, and a small Consumer for services that
// only want the change notifications.
//
// The contracts implemented here are described in docs/architecture.md
// ("Outbox row", "Kafka record"); this package is the only code that builds
// or parses the dc-* record headers.
package events
