package function

// The step leases' conformance cases, run against one Redis and against a
// three-node Redis Cluster the test starts: the same cases, the same
// answers, whichever REDIS_URL names.

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stepflow/stepflow/internal/store"
	"github.com/stepflow/stepflow/internal/testenv"
	"github.com/stepflow/stepflow/internal/wire"
)

// leaseBackends returns the Redis of REDIS_URL and a fresh cluster, by
// name.
func leaseBackends(t *testing.T) map[string]redis.UniversalClient {
	t.Helper()
	return map[string]redis.UniversalClient{
		"single":  testenv.RedisAt(t, testenv.RedisURL()),
		"cluster": testenv.RedisAt(t, testenv.RedisCluster(t)),
	}
}

// leaseCase is one conformance case: rdb is the backend, prefix the
// case's own key prefix.
type leaseCase struct {
	name string
	run  func(t *testing.T, ctx context.Context, rdb redis.UniversalClient, prefix string)
}

// steps makes n runs of the given nodes each, as the keys of one batch.
func steps(runs int, nodes ...string) []store.StepKey {
	var out []store.StepKey
	for r := range runs {
		for _, n := range nodes {
			out = append(out, store.StepKey{RunID: fmt.Sprintf("run-%03d", r), NodeID: n})
		}
	}
	return out
}

func held(ls []*lease) int {
	n := 0
	for _, l := range ls {
		if l != nil {
			n++
		}
	}
	return n
}

var leaseCases = []leaseCase{
	{"a batch takes every free lease in one pipeline, whatever nodes hold them", func(t *testing.T, ctx context.Context, rdb redis.UniversalClient, prefix string) {
		ks := steps(64, "a", "b")
		ls, err := acquireLeases(ctx, rdb, prefix, ks, time.Minute)
		if err != nil {
			t.Fatalf("acquire: %v", err)
		}
		if held(ls) != len(ks) {
			t.Fatalf("took %d of %d free leases", held(ls), len(ks))
		}
		for i, l := range ls {
			if want := wire.LeaseKey(prefix, ks[i].RunID, ks[i].NodeID); l.key != want {
				t.Fatalf("lease %d has key %s, want %s", i, l.key, want)
			}
			if v, err := rdb.Get(ctx, l.key).Result(); err != nil || v != l.token {
				t.Fatalf("%s = %q, %v; want its token", l.key, v, err)
			}
		}
		ttl, err := rdb.PTTL(ctx, ls[0].key).Result()
		if err != nil || ttl <= 0 || ttl > time.Minute {
			t.Errorf("PTTL %s = %s, %v; want (0, 1m]", ls[0].key, ttl, err)
		}
	}},
	{"a lease held by another delivery is not taken; the others of the batch are", func(t *testing.T, ctx context.Context, rdb redis.UniversalClient, prefix string) {
		ks := steps(8, "a")
		if err := rdb.Set(ctx, wire.LeaseKey(prefix, ks[3].RunID, ks[3].NodeID), "another-delivery", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		ls, err := acquireLeases(ctx, rdb, prefix, ks, time.Minute)
		if err != nil {
			t.Fatalf("acquire: %v", err)
		}
		for i, l := range ls {
			if (l == nil) != (i == 3) {
				t.Errorf("lease %d (%s) taken: %v; want every one but 3", i, ks[i].RunID, l != nil)
			}
		}
		again, err := acquireLeases(ctx, rdb, prefix, ks, time.Minute)
		if err != nil {
			t.Fatalf("acquire again: %v", err)
		}
		if n := held(again); n != 0 {
			t.Errorf("a second batch took %d leases already held", n)
		}
	}},
	{"keepLeases renews past the lease's time to live and reports a lost one", func(t *testing.T, ctx context.Context, rdb redis.UniversalClient, prefix string) {
		const ttl = 300 * time.Millisecond
		ks := steps(6, "a")
		ls, err := acquireLeases(ctx, rdb, prefix, ks, ttl)
		if err != nil || held(ls) != len(ks) {
			t.Fatalf("acquire: %d held, %v", held(ls), err)
		}
		var mu sync.Mutex
		lostKeys := map[string]bool{}
		lostOne := make(chan struct{}, len(ks))
		stop := keepLeases(rdb, ls, ttl, func(l *lease) {
			mu.Lock()
			lostKeys[l.key] = true
			mu.Unlock()
			lostOne <- struct{}{}
		})
		stopped := false
		defer func() {
			if !stopped {
				stop()
			}
		}()
		// Taken over by another delivery: the next renewal finds it.
		if err := rdb.Set(ctx, ls[2].key, "another-delivery", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-lostOne:
		case <-time.After(5 * ttl):
			t.Fatalf("a lease taken over was not reported lost within %s", 5*ttl)
		}
		// Three lifetimes later the others are still there, renewed.
		<-time.After(3 * ttl)
		for i, l := range ls {
			if i == 2 {
				continue
			}
			if v, err := rdb.Get(ctx, l.key).Result(); err != nil || v != l.token {
				t.Errorf("after %s, lease %s = %q, %v: not renewed", 3*ttl, l.key, v, err)
			}
		}
		stop()
		stopped = true
		mu.Lock()
		defer mu.Unlock()
		if len(lostKeys) != 1 || !lostKeys[ls[2].key] {
			t.Errorf("lost %v; want only %s", lostKeys, ls[2].key)
		}
	}},
	{"releaseLeases deletes the leases still ours and leaves the one taken over", func(t *testing.T, ctx context.Context, rdb redis.UniversalClient, prefix string) {
		ks := steps(10, "a", "b")
		ls, err := acquireLeases(ctx, rdb, prefix, ks, time.Minute)
		if err != nil || held(ls) != len(ks) {
			t.Fatalf("acquire: %d held, %v", held(ls), err)
		}
		if err := rdb.Set(ctx, ls[5].key, "another-delivery", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		skipped := ls[7].key
		ls[7] = nil // a nil entry (a lease not taken) is skipped
		releaseLeases(rdb, ls)
		keys, err := testenv.RedisKeys(ctx, rdb, prefix)
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(keys)
		want := []string{ls[5].key, skipped}
		sort.Strings(want)
		if !slices.Equal(keys, want) {
			t.Errorf("left %v; want only the lease taken over and the skipped one, %v", keys, want)
		}
	}},
}

func TestLeaseConformance(t *testing.T) {
	t.Parallel()
	for name, rdb := range leaseBackends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, c := range leaseCases {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					prefix := "lt:" + testenv.RandomHex(6) + ":"
					t.Cleanup(func() { testenv.DeleteRedisKeys(t, rdb, prefix) })
					ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
					defer cancel()
					c.run(t, ctx, rdb, prefix)
				})
			}
		})
	}
}

// On a cluster, one run's leases share a slot (the {runId} hash tag), so
// what a run needs is on one node; a batch of many runs spreads over the
// masters, and its one pipeline reaches all of them.
func TestLeaseKeysOfARunShareASlot(t *testing.T) {
	t.Parallel()
	rdb := testenv.RedisAt(t, testenv.RedisCluster(t))
	cc := rdb.(*redis.ClusterClient)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	prefix := "lt:" + testenv.RandomHex(6) + ":"
	slots := map[int64]bool{}
	for r := range 32 {
		run := fmt.Sprintf("run-%03d", r)
		var slot int64 = -1
		for _, node := range []string{"start", "a", "b", "join", "a-very-long-node-id-that-hashes-elsewhere"} {
			s, err := cc.ClusterKeySlot(ctx, wire.LeaseKey(prefix, run, node)).Result()
			if err != nil {
				t.Fatal(err)
			}
			if slot >= 0 && s != slot {
				t.Fatalf("run %s: lease of %s in slot %d, another of its leases in %d", run, node, s, slot)
			}
			slot = s
		}
		slots[slot] = true
	}
	masters := map[string]bool{}
	ls, err := acquireLeases(ctx, rdb, prefix, steps(32, "a"), time.Minute)
	if err != nil || held(ls) != 32 {
		t.Fatalf("acquire: %d held, %v", held(ls), err)
	}
	t.Cleanup(func() { testenv.DeleteRedisKeys(t, rdb, prefix) })
	var mu sync.Mutex // ForEachMaster calls on every master at once
	err = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		n, err := node.DBSize(ctx).Result()
		mu.Lock()
		defer mu.Unlock()
		if n > 0 {
			masters[node.Options().Addr] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(slots) < 2 || len(masters) < 2 {
		t.Errorf("32 runs' leases in %d slots on %d masters; want them spread", len(slots), len(masters))
	}
}
