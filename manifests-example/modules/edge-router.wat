;; edge-router: example edge function
;; WAGI-style handler over WASI preview 1: `_start` answers a request (its body is on stdin,
;; the answer goes to stdout); `health_check` writes "OK" for gitopsd's health checks.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "edge-router: routed to origin-a\n")
  (data (i32.const 32) "OK")
  ;; write(ptr, len) to stdout through one iovec at address 0
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    (call $write (i32.const 64) (i32.const 32)))
  (func (export "health_check")
    (call $write (i32.const 32) (i32.const 2))))
