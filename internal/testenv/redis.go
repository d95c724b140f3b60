package testenv

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stepflow/stepflow/internal/redisconn"
)

// Redis connects to RedisURL and closes the client when the test ends. The
// test fails at once when Redis does not answer.
func Redis(t testing.TB) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(RedisURL())
	if err != nil {
		t.Fatalf("REDIS_URL: %v", err)
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("Redis at %s does not answer: %v (set REDIS_URL)", RedisURL(), err)
	}
	return rdb
}

// RedisAt connects to the Redis or Redis Cluster that url names (as
// stepflow reads REDIS_URL) and closes the client when the test ends. The
// test fails at once when it does not answer.
func RedisAt(t testing.TB, url string) redis.UniversalClient {
	t.Helper()
	rdb, err := redisconn.Open(url)
	if err != nil {
		t.Fatalf("Redis URL %s: %v", url, err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("Redis at %s does not answer: %v", url, err)
	}
	return rdb
}

// RedisKeys lists the keys of rdb's database that start with prefix (of
// every master, for a cluster).
func RedisKeys(ctx context.Context, rdb redis.UniversalClient, prefix string) ([]string, error) {
	scan := func(ctx context.Context, c *redis.Client) ([]string, error) {
		var keys []string
		iter := c.Scan(ctx, 0, prefix+"*", 500).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		return keys, iter.Err()
	}
	switch c := rdb.(type) {
	case *redis.Client:
		return scan(ctx, c)
	case *redis.ClusterClient:
		var mu sync.Mutex
		var keys []string
		err := c.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			ks, err := scan(ctx, node)
			mu.Lock()
			keys = append(keys, ks...)
			mu.Unlock()
			return err
		})
		return keys, err
	}
	return nil, fmt.Errorf("RedisKeys: cannot scan a %T", rdb)
}

// DeleteRedisKeys deletes every key of rdb's database that starts with
// prefix, failing the test (not at once) when it cannot. For t.Cleanup.
func DeleteRedisKeys(t testing.TB, rdb redis.UniversalClient, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := RemoveRedisKeys(ctx, rdb, prefix); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

// RemoveRedisKeys is DeleteRedisKeys for what has no testing.TB (an
// example).
func RemoveRedisKeys(ctx context.Context, rdb redis.UniversalClient, prefix string) error {
	keys, err := RedisKeys(ctx, rdb, prefix)
	if err != nil {
		return fmt.Errorf("scan Redis keys %s*: %w", prefix, err)
	}
	if len(keys) > 0 {
		// One DEL per key: a cluster refuses one over keys of several
		// slots, and its pipeline sends each to its node.
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keys {
				p.Del(ctx, k)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("delete Redis keys %s*: %w", prefix, err)
		}
	}
	return nil
}
