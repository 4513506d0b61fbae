// Package svcconfig is the home of the services' environment configuration;
// the code lives in its sub-packages:
//
//   - envconf reads typed variables under a service's prefix (PUBLISHER,
//     PRODUCER, CONTROLPLANE), reports every bad one as a *envconf.VarError
//     naming the variable, and masks secrets for logs;
//   - pgconf reads PostgreSQL connection strings and checks them with pgx;
//   - tlsconf reads a TLS client configuration (CA, client certificate,
//     skip-verify) from a group of variables;
//   - kafkaconf reads <PREFIX>_KAFKA_* and builds franz-go client options;
//   - redisconf reads <PREFIX>_REDIS_* into a distcache.RedisConfig and builds
//     go-redis clients through it;
//   - apitoken reads <PREFIX>_TOKENS / <PREFIX>_TOKENS_FILE and checks the
//     bearer tokens of a service's API (digests, constant-time comparison);
//   - httpserve builds a service's HTTP server with every timeout set.
//
// Every service reads its Kafka and Redis connection, its API tokens and its
// HTTP server settings through these, so the variable names, defaults and
// rules are the same in all of them.
package svcconfig
