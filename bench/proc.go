package main

// CPU time and memory from /proc: the bridge and function processes (by
// pid), this program, the services (PostgreSQL, Redis, RabbitMQ, found by
// process name) and the machine as a whole (/proc/stat).

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc: AT_CLKTCK from
// this process's auxiliary vector, 100 when it cannot be read.
var clockTicks = func() float64 {
	b, err := os.ReadFile("/proc/self/auxv")
	if err == nil {
		for i := 0; i+16 <= len(b); i += 16 {
			key := binary.NativeEndian.Uint64(b[i:])
			val := binary.NativeEndian.Uint64(b[i+8:])
			if key == 17 && val > 0 { // AT_CLKTCK
				return float64(val)
			}
		}
	}
	return 100
}()

// procCPU returns the CPU seconds (user + system) of pid, and with children
// also those of its exited, waited-for children. ok is false when the
// process is gone or unreadable.
func procCPU(pid int, children bool) (float64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3 (state)
	if len(f) < 15 {
		return 0, false
	}
	sum := 0.0
	idx := []int{11, 12} // utime, stime (fields 14, 15)
	if children {
		idx = append(idx, 13, 14) // cutime, cstime (fields 16, 17)
	}
	for _, k := range idx {
		v, err := strconv.ParseFloat(f[k], 64)
		if err != nil {
			return 0, false
		}
		sum += v
	}
	return sum / clockTicks, true
}

// procStatusKB reads a "Key:   123 kB" line of /proc/<pid>/status (VmHWM:
// peak resident set size, VmRSS: current).
func procStatusKB(pid int, key string) (float64, bool) {
	return fileKB("/proc/"+strconv.Itoa(pid)+"/status", key)
}

func fileKB(path, key string) (float64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return 0, false
			}
			v, err := strconv.ParseFloat(f[0], 64)
			return v, err == nil
		}
	}
	return 0, false
}

// services maps a service to the process names (comm) that make it up.
var services = map[string][]string{
	"postgres": {"postgres"},
	"redis":    {"redis-server"},
	"rabbitmq": {"beam.smp", "erl_child_setup", "epmd"},
}

// serviceProcs lists the pids of each service's processes. rabbitmqctl and
// other escripts also run as beam.smp; they are not the broker and are left
// out.
func serviceProcs() map[string][]int {
	out := map[string][]int{}
	byComm := map[string]string{}
	for svc, names := range services {
		for _, n := range names {
			byComm[n] = svc
		}
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil {
			continue
		}
		svc, ok := byComm[strings.TrimSpace(string(comm))]
		if !ok {
			continue
		}
		if svc == "rabbitmq" {
			cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if bytes.Contains(cmdline, []byte("escript")) {
				continue
			}
		}
		out[svc] = append(out[svc], pid)
	}
	return out
}

// cpuSample is CPU seconds by name at one moment: "bridge", "function",
// "bench" (this process), each service, and "machine" (busy time of all
// cores).
type cpuSample map[string]float64

func sampleCPU(pids map[string]int) cpuSample {
	s := cpuSample{}
	for name, pid := range pids {
		if v, ok := procCPU(pid, false); ok {
			s[name] = v
		}
	}
	if v, ok := procCPU(os.Getpid(), false); ok {
		s["bench"] = v
	}
	// A service's exited processes (PostgreSQL backends of closed
	// connections) count in their parent's cutime/cstime, so each process
	// is taken with its waited-for children: a backend that exits between
	// two samples moves from its own time to its parent's, and the sum
	// stays right.
	for svc, list := range serviceProcs() {
		for _, pid := range list {
			if v, ok := procCPU(pid, true); ok {
				s[svc] += v
			}
		}
	}
	if v, ok := machineBusy(); ok {
		s["machine"] = v
	}
	return s
}

// machineBusy is the busy CPU time of all cores, from /proc/stat.
func machineBusy() (float64, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, false
	}
	busy := 0.0
	for i, v := range f[1:] {
		if i >= 8 { // guest and guest_nice are already in user and nice
			break
		}
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, false
		}
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		busy += n
	}
	return busy / clockTicks, true
}

// cpuDelta is end - start for every name present in both; "other" is the
// machine's busy time not accounted for by the named processes (other
// programs on the machine, the kernel's work not charged to a process).
func cpuDelta(start, end cpuSample) map[string]float64 {
	d := map[string]float64{}
	for k, v := range end {
		if s, ok := start[k]; ok {
			d[k] = round3(v - s)
		}
	}
	if m, ok := d["machine"]; ok {
		other := m
		for k, v := range d {
			if k != "machine" {
				other -= v
			}
		}
		d["other"] = round3(max(other, 0))
	}
	return d
}

// serviceMemory reports, per service, the sum of the proportional set sizes
// of its processes (shared memory split between them, so PostgreSQL's
// shared buffers count once) and the largest peak RSS (VmHWM) of one of its
// processes — a peak since that process started, not only during this run.
func serviceMemory() map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	for svc, list := range serviceProcs() {
		m := map[string]float64{"procs": float64(len(list))}
		for _, pid := range list {
			if v, ok := fileKB("/proc/"+strconv.Itoa(pid)+"/smaps_rollup", "Pss"); ok {
				m["pss_mb"] += v / 1024
			}
			if v, ok := procStatusKB(pid, "VmHWM"); ok {
				m["max_hwm_mb"] = max(m["max_hwm_mb"], v/1024)
			}
		}
		m["pss_mb"] = round1(m["pss_mb"])
		m["max_hwm_mb"] = round1(m["max_hwm_mb"])
		out[svc] = m
	}
	return out
}
