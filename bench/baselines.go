package main

// Baselines: what each component allows on this machine, measured in the
// same run against the same services, in the shape a step uses it.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

// Baselines are the components' rates.
type Baselines struct {
	AMQPMsgsPerS float64 `json:"amqp_msgs_per_s"`
	// Publishers waiting for each confirm, as the bridge's handlers do.
	AMQPSyncMsgsPerS float64 `json:"amqp_sync_msgs_per_s"`
	PGTxPerS         float64 `json:"pg_tx_per_s"`
	RedisOpsPerS     float64 `json:"redis_ops_per_s"`
	HTTPReqPerS      float64 `json:"http_req_per_s"`
	// How each was measured.
	Method map[string]string `json:"method"`
	// CPU milliseconds one operation cost, by process (bench is this
	// program: the clients, and the HTTP server).
	CPUMSPerOp map[string]map[string]float64 `json:"cpu_ms_per_op"`
}

// amqpWindow is the unconfirmed messages the pipelined publisher allows.
const amqpWindow = 1000

// baselineBody is the size of a job message.
var baselineBody = []byte(`{"runId":"3f2c9a1e-8b7d-4c6e-9f0a-1b2c3d4e5f60","blueprintId":"fanout","nodeId":"b1","attempt":1}`)

func runBaselines(ctx context.Context, s *stack) (*Baselines, error) {
	cfg := s.cfg
	b := &Baselines{Method: map[string]string{}, CPUMSPerOp: map[string]map[string]float64{}}
	// measure runs one baseline and records the CPU it cost per operation.
	measure := func(name string, f func() (float64, int64, error)) (float64, error) {
		t0 := time.Now()
		start := sampleCPU(nil)
		rate, n, err := f()
		if err != nil {
			return 0, fmt.Errorf("%s baseline: %w", name, err)
		}
		d := cpuDelta(start, sampleCPU(nil))
		per := map[string]float64{}
		for k, v := range d {
			if k != "machine" && k != "other" {
				per[k] = round3(v * 1000 / float64(n))
			}
		}
		b.CPUMSPerOp[name] = per
		s.log.printf("baseline %s: %.0f/s (%d in %.1f s)", name, rate, n, time.Since(t0).Seconds())
		return round1(rate), nil
	}
	var err error
	if b.AMQPMsgsPerS, err = measure("amqp", func() (float64, int64, error) {
		return amqpBaseline(ctx, cfg, s.queue+"-baseline", amqpWindow)
	}); err != nil {
		return nil, err
	}
	b.Method["amqp"] = fmt.Sprintf("one publisher on a confirm-mode channel keeping up to %d persistent %d-byte messages unconfirmed (pipelined confirms) to a durable classic queue; one consumer on its own connection, prefetch %d, acking each message; for %s; rate = messages acked / (last ack - start)",
		amqpWindow, len(baselineBody), cfg.Prefetch, cfg.BaselineDur)
	if b.AMQPSyncMsgsPerS, err = measure("amqp_sync", func() (float64, int64, error) {
		return amqpBaseline(ctx, cfg, s.queue+"-baseline", 0)
	}); err != nil {
		return nil, err
	}
	b.Method["amqp_sync"] = fmt.Sprintf("as amqp, but %d publishers share the channel and each waits for its message's confirm before publishing the next (the bridge's shape)", cfg.Concurrency)
	if b.PGTxPerS, err = measure("postgres", func() (float64, int64, error) {
		return pgBaseline(ctx, cfg, "bench_"+s.id+"_kv")
	}); err != nil {
		return nil, err
	}
	b.Method["postgres"] = fmt.Sprintf("%d workers over a pool of %d connections, each transaction BEGIN; INSERT … ON CONFLICT (k) DO UPDATE (one row of 10,000); SELECT that row; COMMIT, prepared statements; for %s",
		cfg.Concurrency, cfg.PGConns, cfg.BaselineDur)
	if b.RedisOpsPerS, err = measure("redis", func() (float64, int64, error) {
		return redisBaseline(ctx, s.rdb, s.redisPrefix+"baseline:", cfg.BaselineDur)
	}); err != nil {
		return nil, err
	}
	b.Method["redis"] = fmt.Sprintf("4 workers, each sending pipelines of 100 SETs of a %d-byte value (10,000 keys); for %s", len(baselineBody), cfg.BaselineDur)
	if b.HTTPReqPerS, err = measure("http", func() (float64, int64, error) {
		return httpBaseline(ctx, cfg.Concurrency, cfg.BaselineDur)
	}); err != nil {
		return nil, err
	}
	b.Method["http"] = fmt.Sprintf("net/http server and client in this process on 127.0.0.1, keep-alive, %d concurrent clients POSTing a %d-byte JSON body and reading a small JSON reply; for %s",
		cfg.Concurrency, len(baselineBody), cfg.BaselineDur)
	return b, nil
}

// amqpBaseline publishes persistent messages with confirms to a durable
// queue and consumes them with acks (prefetch as the bridge), for
// cfg.BaselineDur. With window > 0 one publisher keeps up to window
// messages unconfirmed (pipelined confirms, the broker's capacity);
// with window == 0, cfg.Concurrency publishers share one channel and each
// waits for its message's confirm before the next (the bridge's shape: a
// handler publishes its reply's jobs and waits for their confirms).
func amqpBaseline(ctx context.Context, cfg *config, queue string, window int) (float64, int64, error) {
	pubConn, err := amqp.Dial(cfg.AMQPURL)
	if err != nil {
		return 0, 0, err
	}
	defer pubConn.Close()
	consConn, err := amqp.Dial(cfg.AMQPURL)
	if err != nil {
		return 0, 0, err
	}
	defer consConn.Close()
	pub, err := pubConn.Channel()
	if err != nil {
		return 0, 0, err
	}
	if _, err := pub.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		return 0, 0, err
	}
	defer func() {
		if ch, err := pubConn.Channel(); err == nil {
			_, _ = ch.QueueDelete(queue, false, false, false)
		}
	}()
	if err := pub.Confirm(false); err != nil {
		return 0, 0, err
	}
	cons, err := consConn.Channel()
	if err != nil {
		return 0, 0, err
	}
	if err := cons.Qos(cfg.Prefetch, 0, false); err != nil {
		return 0, 0, err
	}
	deliveries, err := cons.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		return 0, 0, err
	}
	var acked, published atomic.Int64
	var lastAck atomic.Int64 // unix ns
	consErr := make(chan error, 1)
	go func() {
		for d := range deliveries {
			if err := d.Ack(false); err != nil {
				consErr <- err
				return
			}
			acked.Add(1)
			lastAck.Store(time.Now().UnixNano())
		}
	}()

	msg := amqp.Publishing{ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: baselineBody}
	start := time.Now()
	stop := start.Add(cfg.BaselineDur)
	var wg sync.WaitGroup
	errs := make(chan error, cfg.Concurrency+1)
	if window > 0 {
		pending := make(chan *amqp.DeferredConfirmation, window)
		wg.Add(1)
		go func() { // confirms, in order
			defer wg.Done()
			for dc := range pending {
				ok, err := dc.WaitContext(ctx)
				if err != nil || !ok {
					errs <- fmt.Errorf("publish not confirmed: %v", err)
					for range pending {
					}
					return
				}
				published.Add(1)
			}
		}()
		for time.Now().Before(stop) {
			dc, err := pub.PublishWithDeferredConfirmWithContext(ctx, "", queue, false, false, msg)
			if err != nil {
				errs <- err
				break
			}
			pending <- dc // blocks while window messages are unconfirmed
		}
		close(pending)
	} else {
		for range cfg.Concurrency {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					dc, err := pub.PublishWithDeferredConfirmWithContext(ctx, "", queue, false, false, msg)
					if err != nil {
						errs <- err
						return
					}
					ok, err := dc.WaitContext(ctx)
					if err != nil || !ok {
						errs <- fmt.Errorf("publish not confirmed: %v", err)
						return
					}
					published.Add(1)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for acked.Load() < published.Load() {
		select {
		case err := <-consErr:
			return 0, 0, err
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("%d of %d messages consumed after 30 s", acked.Load(), published.Load())
		}
	}
	n := acked.Load()
	if n == 0 {
		return 0, 0, fmt.Errorf("no message went through")
	}
	return float64(n) / (float64(lastAck.Load()-start.UnixNano()) / 1e9), n, nil
}

func pgBaseline(ctx context.Context, cfg *config, table string) (float64, int64, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.PostgresURL)
	if err != nil {
		return 0, 0, err
	}
	pcfg.MaxConns = int32(cfg.PGConns)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return 0, 0, err
	}
	defer pool.Close()
	t := pgx.Identifier{table}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+t+" (k integer PRIMARY KEY, v bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"); err != nil {
		return 0, 0, err
	}
	defer func() {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = pool.Exec(c, "DROP TABLE IF EXISTS "+t)
	}()
	upsert := "INSERT INTO " + t + " (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = " + t + ".v + EXCLUDED.v, updated_at = now()"
	sel := "SELECT v FROM " + t + " WHERE k = $1"
	// Connections are opened and statements prepared before the clock starts.
	var warm sync.WaitGroup
	for range cfg.PGConns {
		warm.Add(1)
		go func() {
			defer warm.Done()
			_ = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, upsert, 0, 1); err != nil {
					return err
				}
				var v int64
				return tx.QueryRow(ctx, sel, 0).Scan(&v)
			})
		}()
	}
	warm.Wait()
	var n atomic.Int64
	start := time.Now()
	stop := start.Add(cfg.BaselineDur)
	var wg sync.WaitGroup
	errs := make(chan error, cfg.Concurrency)
	for range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				k := rand.IntN(10000)
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, upsert, k, 1); err != nil {
						return err
					}
					var v int64
					return tx.QueryRow(ctx, sel, k).Scan(&v)
				})
				if err != nil {
					errs <- err
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, err
	}
	return float64(n.Load()) / elapsed.Seconds(), n.Load(), nil
}

func redisBaseline(ctx context.Context, rdb *redis.Client, prefix string, dur time.Duration) (float64, int64, error) {
	const workers, batch, keys = 4, 100, 10000
	var n atomic.Int64
	start := time.Now()
	stop := start.Add(dur)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := w * keys / workers
			for time.Now().Before(stop) {
				p := rdb.Pipeline()
				for range batch {
					p.Set(ctx, prefix+strconv.Itoa(i%keys), baselineBody, 0)
					i++
				}
				if _, err := p.Exec(ctx); err != nil {
					errs <- err
					return
				}
				n.Add(batch)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, err
	}
	return float64(n.Load()) / elapsed.Seconds(), n.Load(), nil
}

func httpBaseline(ctx context.Context, concurrency int, dur time.Duration) (float64, int64, error) {
	reply := []byte(`{"specversion":"1.0","type":"dev.stepflow.jobs.v1","data":{"jobs":[]}}`)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(reply)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = max(concurrency, 2)
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	defer tr.CloseIdleConnections()
	url := "http://" + ln.Addr().String() + "/"
	var n atomic.Int64
	start := time.Now()
	stop := start.Add(dur)
	var wg sync.WaitGroup
	errs := make(chan error, concurrency)
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(baselineBody))
				req.Header.Set("Content-Type", "application/json")
				resp, err := hc.Do(req)
				if err != nil {
					errs <- err
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("status %d", resp.StatusCode)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, 0, err
	}
	return float64(n.Load()) / elapsed.Seconds(), n.Load(), nil
}
