package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisClusterNodes is the size of the cluster RedisCluster starts: the
// smallest Redis accepts with masters only.
const redisClusterNodes = 3

// RedisCluster starts a three-node Redis Cluster (masters only, no
// replicas, nothing on disk) of redis-server processes on free loopback
// ports, in a folder of t's, and stops it when t ends. It returns the
// cluster's URL as stepflow reads REDIS_URL:
// redis://127.0.0.1:P1?addr=127.0.0.1:P2&addr=127.0.0.1:P3. The test fails
// at once when redis-server or redis-cli is missing or the cluster does not
// form within a few seconds.
func RedisCluster(t testing.TB) string {
	t.Helper()
	server, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("a Redis Cluster test needs redis-server on PATH (.ci/run checks for it): %v", err)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("a Redis Cluster test needs redis-cli on PATH (.ci/run checks for it): %v", err)
	}
	dir := t.TempDir()
	ports := clusterPorts(t, redisClusterNodes)
	addrs := make([]string, len(ports))
	for i, port := range ports {
		addrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		startClusterNode(t, server, dir, port)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, a := range addrs {
		waitRedis(ctx, t, a)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create %s: %v\n%s", strings.Join(addrs, " "), err, out)
	}
	for _, a := range addrs {
		waitClusterOK(ctx, t, a)
	}
	return "redis://" + addrs[0] + "?addr=" + strings.Join(addrs[1:], "&addr=")
}

// clusterPorts picks n ports free on 127.0.0.1 whose cluster bus ports
// (port + 10000) are free too.
func clusterPorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	for try := 0; len(ports) < n; try++ {
		if try == 200 {
			t.Fatalf("found only %d loopback ports with a free cluster bus port in 200 tries", len(ports))
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		if port+10000 > 65535 {
			ln.Close()
			continue
		}
		bus, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
		ln.Close()
		if err != nil {
			continue
		}
		bus.Close()
		ports = append(ports, port)
	}
	return ports
}

// startClusterNode starts one cluster-enabled redis-server and registers
// its stop.
func startClusterNode(t testing.TB, server, dir string, port int) {
	t.Helper()
	p := strconv.Itoa(port)
	cmd := exec.Command(server,
		"--port", p, "--bind", "127.0.0.1", "--protected-mode", "no",
		"--cluster-enabled", "yes", "--cluster-config-file", "nodes-"+p+".conf", "--cluster-node-timeout", "5000",
		"--dir", dir, "--save", "", "--appendonly", "no",
		"--logfile", filepath.Join(dir, "redis-"+p+".log"))
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server on port %s: %v", p, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("redis-server on port %s did not stop within 10 s of SIGTERM; killed", p)
		}
	})
}

// waitRedis polls addr with PING until it answers or ctx ends.
func waitRedis(ctx context.Context, t testing.TB, addr string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	err := pollUntil(ctx, func() error { return c.Ping(ctx).Err() })
	if err != nil {
		t.Fatalf("redis-server at %s does not answer: %v", addr, err)
	}
}

// waitClusterOK polls CLUSTER INFO on addr until the node sees the whole
// cluster: state ok, every slot served, every node known.
func waitClusterOK(ctx context.Context, t testing.TB, addr string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	want := []string{"cluster_state:ok", "cluster_slots_ok:16384", "cluster_known_nodes:" + strconv.Itoa(redisClusterNodes)}
	err := pollUntil(ctx, func() error {
		info, err := c.ClusterInfo(ctx).Result()
		if err != nil {
			return err
		}
		for _, w := range want {
			if !strings.Contains(info, w) {
				return fmt.Errorf("CLUSTER INFO lacks %s:\n%s", w, info)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Redis Cluster node %s: %v", addr, err)
	}
}

// pollUntil calls try every 20 ms until it returns nil or ctx ends.
func pollUntil(ctx context.Context, try func() error) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := try()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-tick.C:
		}
	}
}
