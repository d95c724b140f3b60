package redisconn_test

import (
	"slices"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/stepflow/stepflow/internal/redisconn"
)

func TestOpen(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		url     string
		cluster []string // the nodes to start from; nil: one Redis
		db      int
		bad     bool
	}{
		{url: "redis://127.0.0.1:6379/0"},
		{url: "redis://user:pw@redis:6380/3", db: 3},
		{url: "rediss://redis:6379"},
		{url: "unix:///run/redis.sock?db=2", db: 2},
		{url: "redis://a:7000?addr=b:7001&addr=c:7002", cluster: []string{"a:7000", "b:7001", "c:7002"}},
		{url: "redis://user:pw@a:7000/0?addr=b:7001", cluster: []string{"a:7000", "b:7001"}},
		{url: "redis://a:7000/2?addr=b:7001", bad: true}, // a cluster has database 0 only
		{url: "redis://a:7000?addr=b", bad: true},
		{url: "http://a:7000/", bad: true},
		{url: "redis://a:7000?pool=3", bad: true},
	} {
		rdb, err := redisconn.Open(tt.url)
		if tt.bad {
			if err == nil {
				t.Errorf("Open(%q) accepted it", tt.url)
				rdb.Close()
			}
			continue
		}
		if err != nil {
			t.Errorf("Open(%q): %v", tt.url, err)
			continue
		}
		switch c := rdb.(type) {
		case *redis.Client:
			if tt.cluster != nil || c.Options().DB != tt.db {
				t.Errorf("Open(%q) = one Redis, database %d; want cluster %v / database %d", tt.url, c.Options().DB, tt.cluster, tt.db)
			}
		case *redis.ClusterClient:
			if got := c.Options().Addrs; !slices.Equal(got, tt.cluster) {
				t.Errorf("Open(%q) = a cluster from %v; want %v", tt.url, got, tt.cluster)
			}
		default:
			t.Errorf("Open(%q) = %T", tt.url, rdb)
		}
		rdb.Close()
	}
}
