package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
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

// RedisKeys lists the keys of rdb's database that start with prefix.
func RedisKeys(ctx context.Context, rdb *redis.Client, prefix string) ([]string, error) {
	var keys []string
	iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	return keys, iter.Err()
}

// DeleteRedisKeys deletes every key of rdb's database that starts with
// prefix, failing the test (not at once) when it cannot. For t.Cleanup.
func DeleteRedisKeys(t testing.TB, rdb *redis.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := RemoveRedisKeys(ctx, rdb, prefix); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

// RemoveRedisKeys is DeleteRedisKeys for what has no testing.TB (an
// example).
func RemoveRedisKeys(ctx context.Context, rdb *redis.Client, prefix string) error {
	keys, err := RedisKeys(ctx, rdb, prefix)
	if err != nil {
		return fmt.Errorf("scan Redis keys %s*: %w", prefix, err)
	}
	if len(keys) > 0 {
		if err := rdb.Del(ctx, keys...).Err(); err != nil {
			return fmt.Errorf("delete Redis keys %s*: %w", prefix, err)
		}
	}
	return nil
}
