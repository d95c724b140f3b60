package function

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/internal/wire"
)

// A lease keeps two deliveries of one job from running its node at the
// same time. It is short-lived and advisory: correctness rests on the
// step row in PostgreSQL (a commit applies only to an unfinished attempt),
// so an expired lease or a flushed Redis costs at most a duplicate attempt
// whose commit is discarded.
type lease struct {
	rdb   redis.UniversalClient
	key   string
	token string
	lost  bool // keepLeases found it taken or expired
}

// releaseSource deletes a lease if it is still ours. It is sent with EVAL
// (not EVALSHA) in pipelines, where a NOSCRIPT error could not be retried.
const releaseSource = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`

// acquireLeases takes the leases of the given steps for ttl in one
// pipeline; a nil entry means another delivery holds that one. On an error
// the leases are returned too, none of them known to be held: releasing
// them all is safe (each token is new) and frees any the pipeline did take.
func acquireLeases(ctx context.Context, rdb redis.UniversalClient, prefix string, steps []store.StepKey, ttl time.Duration) ([]*lease, error) {
	out := make([]*lease, len(steps))
	if len(steps) == 0 {
		return out, nil
	}
	cmds := make([]*redis.BoolCmd, len(steps))
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range steps {
			var b [12]byte
			_, _ = rand.Read(b[:])
			out[i] = &lease{rdb: rdb, key: wire.LeaseKey(prefix, k.RunID, k.NodeID), token: hex.EncodeToString(b[:])}
			cmds[i] = p.SetNX(ctx, out[i].key, out[i].token, ttl)
		}
		return nil
	})
	if err != nil {
		return out, err
	}
	for i, c := range cmds {
		if !c.Val() {
			out[i] = nil
		}
	}
	return out, nil
}

// renewSource sets a lease's time to live if it is still ours (1), else
// returns 0.
const renewSource = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end return 0`

// keepLeases renews the leases (nil entries skipped) every ttl/3, in one
// pipeline, until stop is called: a job's lease must last until its
// outcome is committed, and in a batch that waits for the slowest node.
// lost is called for a lease found taken or expired.
func keepLeases(rdb redis.UniversalClient, leases []*lease, ttl time.Duration, lost func(*lease)) (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), ttl/3)
			cmds := make([]*redis.Cmd, len(leases))
			_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i, l := range leases {
					if l != nil && !l.lost {
						cmds[i] = p.Eval(ctx, renewSource, []string{l.key}, l.token, ttl.Milliseconds())
					}
				}
				return nil
			})
			cancel()
			for i, c := range cmds {
				if c == nil {
					continue
				}
				if n, err := c.Int(); err == nil && n == 0 {
					leases[i].lost = true
					lost(leases[i])
				}
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
	}
}

// releaseLeases gives up, in one pipeline, those of the leases that are
// still ours (nil entries are skipped).
func releaseLeases(rdb redis.UniversalClient, leases []*lease) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, l := range leases {
			if l != nil {
				p.Eval(ctx, releaseSource, []string{l.key}, l.token)
			}
		}
		return nil
	})
}
