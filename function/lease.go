package function

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stepflow/stepflow/internal/wire"
)

// A lease keeps two deliveries of one job from running its node at the
// same time. It is short-lived and advisory: correctness rests on the
// step row in PostgreSQL (a commit applies only to an unfinished attempt),
// so an expired lease or a flushed Redis costs at most a duplicate attempt
// whose commit is discarded.
type lease struct {
	rdb   *redis.Client
	key   string
	token string
}

var releaseScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)

// acquireLease takes the lease of (run, node) for ttl; ok is false when
// another delivery holds it.
func acquireLease(ctx context.Context, rdb *redis.Client, prefix, runID, nodeID string, ttl time.Duration) (*lease, bool, error) {
	var b [12]byte
	_, _ = rand.Read(b[:])
	l := &lease{rdb: rdb, key: wire.LeaseKey(prefix, runID, nodeID), token: hex.EncodeToString(b[:])}
	ok, err := rdb.SetNX(ctx, l.key, l.token, ttl).Result()
	if err != nil {
		return nil, false, err
	}
	return l, ok, nil
}

// release gives the lease up if it is still ours.
func (l *lease) release() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = releaseScript.Run(ctx, l.rdb, []string{l.key}, l.token).Err()
}

var renewScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end return 0`)

// renew sets the lease's time to live to ttl if it is still ours.
func (l *lease) renew(ctx context.Context, ttl time.Duration) error {
	return renewScript.Run(ctx, l.rdb, []string{l.key}, l.token, ttl.Milliseconds()).Err()
}
