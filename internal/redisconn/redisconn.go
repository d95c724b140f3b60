// Package redisconn opens the Redis client a REDIS_URL names: one Redis,
// or a Redis Cluster, in go-redis's own URL forms.
//
//	redis://[user:password@]host:port/db                       one Redis
//	redis://[user:password@]host:port?addr=host2:port2&addr=…  a cluster: the nodes to start from
//
// A URL with addr parameters names a cluster (redis.ParseClusterURL), any
// other one a single Redis (redis.ParseURL, unix:// sockets included);
// rediss:// is TLS in both.
// The cluster client finds the rest of the cluster from the nodes named
// (name two or more, so that one being down does not stop a start) and
// follows its slots as they move.
//
// stepflow keeps every key of a run under the run's hash tag
// (wire.LeaseKey: <prefix>lease:{<runId>}:<node>), so whatever a run needs
// stays on one slot; it issues no command over keys of several runs except
// in pipelines, which the cluster client splits by node.
//
// It imports go-redis only.
package redisconn

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Open returns a client for the Redis or Redis Cluster that rawURL names.
// It does not connect; the first command does.
func Open(rawURL string) (redis.UniversalClient, error) {
	cluster, err := IsCluster(rawURL)
	if err != nil {
		return nil, err
	}
	if !cluster {
		o, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, err
		}
		return redis.NewClient(o), nil
	}
	u, _ := url.Parse(rawURL) // IsCluster parsed it
	if db := strings.Trim(u.Path, "/"); db != "" && db != "0" {
		return nil, fmt.Errorf("redis: a Redis Cluster has database 0 only, the URL names database %q", db)
	}
	o, err := redis.ParseClusterURL(rawURL)
	if err != nil {
		return nil, err
	}
	return redis.NewClusterClient(o), nil
}

// IsCluster reports whether rawURL names a Redis Cluster: it has addr
// parameters.
func IsCluster(rawURL string) (bool, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return false, fmt.Errorf("redis: %w", err)
	}
	return u.Query().Has("addr"), nil
}
