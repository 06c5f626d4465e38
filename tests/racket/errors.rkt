#lang racket/base
;; What Racket raises for every error case of racket/tcp and racket/udp that sockbroker implements.
;;
;; DESIGN.md §4: where Racket raises for an operation and the documentation is silent, the daemon
;; copies Racket's kind, errno and first message line byte for byte. This program is the reference
;; side of that comparison (tests/racket/scenarios.py runs the same scenarios against the daemon;
;; tests/behaviour/test_racket_errors.py compares with the recorded racket-8.7.jsonl).
;; It prints one JSON object per line:
;;   {"scenario": id, "kind": "exn:fail:network:errno" | "exn:fail:network" | "exn:fail:contract"
;;    | "exn:fail" | "exn:break" | null (nothing raised) | "timeout" | "setup-failed" | "crash",
;;    "errno": n | null, "errno_family": "posix" | "gai" | null, "first_line": …, "message": …,
;;    "struct": Racket's struct name, "result": what came back when nothing was raised,
;;    "crash": how the process died after the outcome, if it did}
;;
;; Loopback only: 127.0.0.1 and ::1; the one name resolved is "localhost", which /etc/hosts
;; answers (192.0.2.1, TEST-NET, is only bound to, which fails before any packet). Scenarios
;; that need a DNS lookup (host not found, a group name that does not resolve) are left out on
;; purpose: resolving such a name would ask the machine's DNS server.
;; Each scenario runs in a process of its own, in a thread under a custodian of its own, and is
;; bounded by `limit` seconds (see the runner at the end).
;;
;; Usage: racket tests/racket/errors.rkt [scenario-id ...]     (all scenarios when none is named)
;; Re-record: racket tests/racket/errors.rkt > tests/racket/racket-8.7.jsonl   (see README.md)

(require ffi/unsafe
         ffi/unsafe/port
         json
         racket/runtime-path
         racket/string
         racket/tcp
         racket/udp)

;; Seconds per scenario, and per child process (starting Racket takes seconds on a busy machine).
(define limit 5)
(define child-limit 60)
(define-runtime-path self "errors.rkt")

;; ── outcome of one probed call ──────────────────────────────────────────────────────────────
(define (kind-of e)
  (cond
    [(exn:break? e) "exn:break"]
    [(exn:fail:network:errno? e) "exn:fail:network:errno"]
    [(exn:fail:network? e) "exn:fail:network"]
    [(exn:fail:contract? e) "exn:fail:contract"]
    [(exn:fail? e) "exn:fail"]
    [(exn? e) "exn"]
    [else "raise"]))

(define (struct-name e)
  (define v (struct->vector e))
  (symbol->string (vector-ref v 0)))

(define (describe e)
  (cond
    [(exn? e)
     (define msg (exn-message e))
     (define errno (and (exn:fail:network:errno? e) (exn:fail:network:errno-errno e)))
     (hasheq 'kind (kind-of e)
             'errno (if errno (car errno) (json-null))
             'errno_family (if errno (symbol->string (cdr errno)) (json-null))
             'first_line (car (string-split msg "\n" #:trim? #f))
             'message msg
             'struct (struct-name e))]
    [else (hasheq 'kind "raise" 'result (format "~s" e))]))

;; Run the operation under test; what it raises (or returns) is the scenario's outcome.
(define (probe thunk)
  (with-handlers ([(λ (e) #t) describe])
    (call-with-values thunk
                      (λ vs (hasheq 'kind (json-null) 'result (format "~s" vs))))))

;; ── fixtures ────────────────────────────────────────────────────────────────────────────────
(define (listen-port l)
  (define-values (a p b q) (tcp-addresses l #t))
  p)

;; A connected pair on loopback: (f client-in client-out server-in server-out listener).
(define (with-conn f)
  (define l (tcp-listen 0 4 #t "127.0.0.1"))
  (define-values (ci co) (tcp-connect "127.0.0.1" (listen-port l)))
  (define-values (si so) (tcp-accept l))
  (f ci co si so l))

;; A port number nothing listens on (closed right after it was bound).
(define (free-port)
  (define l (tcp-listen 0 4 #t "127.0.0.1"))
  (define p (listen-port l))
  (tcp-close l)
  p)

(define (closed-listener)
  (define l (tcp-listen 0 4 #t "127.0.0.1"))
  (tcp-close l)
  l)

(define (udp-bound)
  (define u (udp-open-socket))
  (udp-bind! u "127.0.0.1" 0)
  u)

(define (udp-port u)
  (define-values (a p b q) (udp-addresses u #t))
  p)

(define (udp-closed)
  (define u (udp-open-socket))
  (udp-close u)
  u)

(define (udp-connected)
  (define peer (udp-bound))
  (define u (udp-bound))
  (udp-connect! u "127.0.0.1" (udp-port peer))
  (values u peer))

;; The client's ports of a connection whose peer reset it: the peer closes with SO_LINGER 0, set
;; through the FFI (Linux values: SOL_SOCKET 1, SO_LINGER 13), so that the kernel sends an RST.
;; (Closing the Racket ports over unread data is not enough: close-output-port sends a FIN first,
;; and the reader then sees end-of-file, not the reset.)
(define setsockopt
  (get-ffi-obj "setsockopt" #f (_fun _int _int _int _pointer _int -> _int)))
(define (abort-close! in out)
  (define linger (malloc 8 'raw))
  (ptr-set! linger _int 0 1)
  (ptr-set! linger _int 1 0)
  (define rc (setsockopt (unsafe-port->socket out) 1 13 linger 8))
  (free linger)
  (unless (zero? rc) (error 'abort-close! "setsockopt SO_LINGER failed"))
  ;; Abandon the output port first: close-output-port would send a FIN ahead of the RST.
  (tcp-abandon-port out)
  (close-input-port in))

(define (reset-conn f)
  (with-conn
   (λ (ci co si so l)
     (write-bytes #"unread" co)
     (flush-output co)
     (sleep 0.1)
     (abort-close! si so)
     (sleep 0.2)
     (f ci co))))

;; Break the calling thread after a moment, while it waits in `thunk`.
(define (probe-break thunk)
  (define me (current-thread))
  (thread (λ () (sleep 0.2) (break-thread me)))
  (probe thunk))

(define (shut-down-custodian)
  (define c (make-custodian))
  (custodian-shutdown-all c)
  c)

;; ── scenarios ───────────────────────────────────────────────────────────────────────────────
(define scenarios '())
(define-syntax-rule (scenario id body ...)
  (set! scenarios (cons (cons id (λ () body ...)) scenarios)))

(define G "239.255.0.1")  ; an administratively scoped IPv4 group; interface always 127.0.0.1
(define big (make-bytes 65508 65))

;; TCP: a closed input port
(define-syntax-rule (closed-in (ci) op)
  (with-conn (λ (ci co si so l) (close-input-port ci) (probe (λ () op)))))
(scenario "tcp/in-closed/read-bytes-avail!" (closed-in (ci) (read-bytes-avail! (make-bytes 10) ci)))
(scenario "tcp/in-closed/read-bytes-avail!*" (closed-in (ci) (read-bytes-avail!* (make-bytes 10) ci)))
(scenario "tcp/in-closed/read-bytes" (closed-in (ci) (read-bytes 10 ci)))
(scenario "tcp/in-closed/peek-bytes-avail!" (closed-in (ci) (peek-bytes-avail! (make-bytes 10) 0 #f ci)))
(scenario "tcp/in-closed/tcp-addresses" (closed-in (ci) (tcp-addresses ci #t)))
(scenario "tcp/in-closed/tcp-abandon-port" (closed-in (ci) (tcp-abandon-port ci)))
(scenario "tcp/in-closed/file-stream-buffer-mode-set" (closed-in (ci) (file-stream-buffer-mode ci 'none)))
(scenario "tcp/in-closed/file-stream-buffer-mode-get" (closed-in (ci) (file-stream-buffer-mode ci)))
(scenario "tcp/in-closed/close-input-port" (closed-in (ci) (close-input-port ci)))
(scenario "tcp/in-closed/sync-read-ready" (closed-in (ci) (eq? ci (sync/timeout 0 ci))))

;; TCP: a closed output port (and an abandoned one)
(define-syntax-rule (closed-out (co) op)
  (with-conn (λ (ci co si so l) (close-output-port co) (probe (λ () op)))))
(scenario "tcp/out-closed/write-bytes" (closed-out (co) (write-bytes #"x" co)))
(scenario "tcp/out-closed/flush-output" (closed-out (co) (flush-output co)))
(scenario "tcp/out-closed/tcp-addresses" (closed-out (co) (tcp-addresses co #t)))
(scenario "tcp/out-closed/tcp-abandon-port" (closed-out (co) (tcp-abandon-port co)))
(scenario "tcp/out-closed/file-stream-buffer-mode-set" (closed-out (co) (file-stream-buffer-mode co 'none)))
(scenario "tcp/out-closed/file-stream-buffer-mode-get" (closed-out (co) (file-stream-buffer-mode co)))
(scenario "tcp/out-closed/close-output-port" (closed-out (co) (close-output-port co)))
(scenario "tcp/out-closed/sync-write-ready" (closed-out (co) (eq? co (sync/timeout 0 co))))
(scenario "tcp/out-abandoned/write-bytes"
          (with-conn (λ (ci co si so l) (tcp-abandon-port co) (probe (λ () (write-bytes #"x" co))))))

;; TCP: the wrong direction, a bad buffer mode
(scenario "tcp/in/write-bytes" (with-conn (λ (ci co si so l) (probe (λ () (write-bytes #"x" ci))))))
(scenario "tcp/out/read-bytes-avail!"
          (with-conn (λ (ci co si so l) (probe (λ () (read-bytes-avail! (make-bytes 1) co))))))
(scenario "tcp/in/file-stream-buffer-mode-line"
          (with-conn (λ (ci co si so l) (probe (λ () (file-stream-buffer-mode ci 'line))))))

;; TCP: a connection the peer reset
(scenario "tcp/reset/read-bytes-avail!"
          (reset-conn (λ (ci co) (probe (λ () (read-bytes-avail! (make-bytes 10) ci))))))
(scenario "tcp/reset/write-bytes+flush"
          (reset-conn (λ (ci co) (probe (λ () (for ([i 3]) (write-bytes #"x" co) (flush-output co) (sleep 0.05)))))))

;; TCP: a closed listener
(scenario "tcp/listener-closed/tcp-accept" (let ([l (closed-listener)]) (probe (λ () (tcp-accept l)))))
(scenario "tcp/listener-closed/tcp-accept-ready?" (let ([l (closed-listener)]) (probe (λ () (tcp-accept-ready? l)))))
(scenario "tcp/listener-closed/tcp-close" (let ([l (closed-listener)]) (probe (λ () (tcp-close l)))))
(scenario "tcp/listener-closed/tcp-addresses" (let ([l (closed-listener)]) (probe (λ () (tcp-addresses l #t)))))
(scenario "tcp/listener-closed/sync-accept-evt"
          (let ([l (closed-listener)]) (probe (λ () (sync/timeout 0 (tcp-accept-evt l))))))
(scenario "tcp/listener-closed/sync-listener"
          (let ([l (closed-listener)]) (probe (λ () (eq? l (sync/timeout 0 l))))))

;; TCP: tcp-listen
(scenario "tcp/listen/in-use"
          (let ([l (tcp-listen 0 4 #f "127.0.0.1")]) (probe (λ () (tcp-listen (listen-port l) 4 #f "127.0.0.1")))))
(scenario "tcp/listen/in-use-reuse"
          (let ([l (tcp-listen 0 4 #t "127.0.0.1")]) (probe (λ () (tcp-listen (listen-port l) 4 #t "127.0.0.1")))))
(scenario "tcp/listen/port-70000" (probe (λ () (tcp-listen 70000 4 #f "127.0.0.1"))))
(scenario "tcp/listen/port-negative" (probe (λ () (tcp-listen -1 4 #f "127.0.0.1"))))
(scenario "tcp/listen/backlog-negative" (probe (λ () (tcp-listen 0 -1 #f "127.0.0.1"))))
(scenario "tcp/listen/address-not-local" (probe (λ () (tcp-listen 0 4 #f "192.0.2.1"))))

;; TCP: tcp-connect
(scenario "tcp/connect/refused" (let ([p (free-port)]) (probe (λ () (tcp-connect "127.0.0.1" p)))))
(scenario "tcp/connect/refused-ipv6"
          (let ([l (tcp-listen 0 4 #t "::1")])
            (define p (listen-port l))
            (tcp-close l)
            (probe (λ () (tcp-connect "::1" p)))))
(scenario "tcp/connect/local-hostname-without-port"
          (probe (λ () (tcp-connect "127.0.0.1" (free-port) "127.0.0.1" #f))))
(scenario "tcp/connect/port-0" (probe (λ () (tcp-connect "127.0.0.1" 0))))
(scenario "tcp/connect/port-70000" (probe (λ () (tcp-connect "127.0.0.1" 70000))))
(scenario "tcp/connect/local-port-0" (probe (λ () (tcp-connect "127.0.0.1" (free-port) "127.0.0.1" 0))))
(scenario "tcp/connect/local-port-in-use"
          (let* ([l (tcp-listen 0 4 #f "127.0.0.1")] [target (tcp-listen 0 4 #f "127.0.0.1")])
            (probe (λ () (tcp-connect "127.0.0.1" (listen-port target) "127.0.0.1" (listen-port l))))))
(scenario "tcp/connect/local-family-mismatch"
          (let ([target (tcp-listen 0 4 #f "127.0.0.1")])
            (probe (λ () (tcp-connect "127.0.0.1" (listen-port target) "::1" (free-port))))))

;; Breaks
(scenario "tcp/accept/break"
          (let ([l (tcp-listen 0 4 #t "127.0.0.1")]) (probe-break (λ () (tcp-accept/enable-break l)))))
(scenario "udp/receive/break"
          (let ([u (udp-bound)]) (probe-break (λ () (udp-receive!/enable-break u (make-bytes 10))))))

;; Custodians
(scenario "custodian/shut-down/tcp-listen"
          (let ([c (shut-down-custodian)])
            (probe (λ () (parameterize ([current-custodian c]) (tcp-listen 0 4 #t "127.0.0.1"))))))
(scenario "custodian/shut-down/tcp-connect"
          (let ([target (tcp-listen 0 4 #f "127.0.0.1")] [c (shut-down-custodian)])
            (probe (λ () (parameterize ([current-custodian c]) (tcp-connect "127.0.0.1" (listen-port target)))))))
(scenario "custodian/shut-down/udp-open-socket"
          (let ([c (shut-down-custodian)])
            (probe (λ () (parameterize ([current-custodian c]) (udp-open-socket))))))
(scenario "custodian/shut-down/udp-send-to"
          (let* ([c (make-custodian)]
                 [u (parameterize ([current-custodian c]) (udp-open-socket))]
                 [target (udp-bound)])
            (custodian-shutdown-all c)
            (probe (λ () (udp-send-to u "127.0.0.1" (udp-port target) #"x")))))

;; UDP: open, bind, connect
(scenario "udp/open/family-port-0" (probe (λ () (udp-open-socket "127.0.0.1" 0))))
(scenario "udp/close/twice" (let ([u (udp-closed)]) (probe (λ () (udp-close u)))))
(scenario "udp/bind/twice" (let ([u (udp-bound)]) (probe (λ () (udp-bind! u "127.0.0.1" 0)))))
(scenario "udp/bind/closed" (let ([u (udp-closed)]) (probe (λ () (udp-bind! u "127.0.0.1" 0)))))
(scenario "udp/bind/port-70000" (let ([u (udp-open-socket)]) (probe (λ () (udp-bind! u "127.0.0.1" 70000)))))
(scenario "udp/bind/in-use"
          (let ([a (udp-bound)] [b (udp-open-socket)]) (probe (λ () (udp-bind! b "127.0.0.1" (udp-port a))))))
(scenario "udp/bind/in-use-reuse"
          (let ([a (udp-bound)] [b (udp-open-socket)]) (probe (λ () (udp-bind! b "127.0.0.1" (udp-port a) #t)))))
(scenario "udp/bind/address-not-local" (let ([u (udp-open-socket)]) (probe (λ () (udp-bind! u "192.0.2.1" 0)))))
(scenario "udp/connect/hostname-only" (let ([u (udp-open-socket)]) (probe (λ () (udp-connect! u "127.0.0.1" #f)))))
(scenario "udp/connect/port-only" (let ([u (udp-open-socket)]) (probe (λ () (udp-connect! u #f 5000)))))
(scenario "udp/connect/port-0" (let ([u (udp-open-socket)]) (probe (λ () (udp-connect! u "127.0.0.1" 0)))))
(scenario "udp/connect/closed" (let ([u (udp-closed)]) (probe (λ () (udp-connect! u "127.0.0.1" 5000)))))

;; UDP: an IPv6 socket given IPv4 addresses
(define (udp6) (udp-open-socket "::1" #f))
(scenario "udp/bind/family-mismatch" (let ([u (udp6)]) (probe (λ () (udp-bind! u "127.0.0.1" 0)))))
(scenario "udp/connect/family-mismatch"
          (let ([u (udp6)] [peer (udp-bound)]) (probe (λ () (udp-connect! u "127.0.0.1" (udp-port peer))))))
(scenario "udp/send-to/family-mismatch"
          (let ([u (udp6)] [peer (udp-bound)]) (probe (λ () (udp-send-to u "127.0.0.1" (udp-port peer) #"x")))))

;; UDP: an IPv4 socket given IPv6 addresses
(scenario "udp/bind/ipv6-on-ipv4" (let ([u (udp-open-socket)]) (probe (λ () (udp-bind! u "::1" 0)))))
(scenario "udp/connect/ipv6-on-ipv4"
          (let ([u (udp-open-socket)]) (probe (λ () (udp-connect! u "::1" 9)))))
(scenario "udp/send-to/ipv6-on-ipv4"
          (let ([u (udp-open-socket)]) (probe (λ () (udp-send-to u "::1" 9 #"x")))))

;; UDP: send, send-to, receive
(scenario "udp/send/unconnected" (let ([u (udp-open-socket)]) (probe (λ () (udp-send u #"x")))))
(scenario "udp/send-to/connected"
          (let-values ([(u peer) (udp-connected)]) (probe (λ () (udp-send-to u "127.0.0.1" (udp-port peer) #"x")))))
(scenario "udp/send-to/port-0" (let ([u (udp-open-socket)]) (probe (λ () (udp-send-to u "127.0.0.1" 0 #"x")))))
(scenario "udp/send-to/start-past-end"
          (let ([u (udp-open-socket)] [peer (udp-bound)])
            (probe (λ () (udp-send-to u "127.0.0.1" (udp-port peer) #"abc" 4)))))
(scenario "udp/send-to/end-past-length"
          (let ([u (udp-open-socket)] [peer (udp-bound)])
            (probe (λ () (udp-send-to u "127.0.0.1" (udp-port peer) #"abc" 0 10)))))
(scenario "udp/send-to/end-before-start"
          (let ([u (udp-open-socket)] [peer (udp-bound)])
            (probe (λ () (udp-send-to u "127.0.0.1" (udp-port peer) #"abc" 2 1)))))
(scenario "udp/send/end-past-length" (let-values ([(u peer) (udp-connected)]) (probe (λ () (udp-send u #"abc" 0 10)))))
(scenario "udp/send-to/too-big"
          (let ([u (udp-open-socket)] [peer (udp-bound)])
            (probe (λ () (udp-send-to u "127.0.0.1" (udp-port peer) big)))))
(scenario "udp/send/too-big" (let-values ([(u peer) (udp-connected)]) (probe (λ () (udp-send u big)))))
(scenario "udp/receive/unbound" (let ([u (udp-open-socket)]) (probe (λ () (udp-receive! u (make-bytes 10))))))
(scenario "udp/receive*/unbound" (let ([u (udp-open-socket)]) (probe (λ () (udp-receive!* u (make-bytes 10))))))
(scenario "udp/receive/start-past-end" (let ([u (udp-bound)]) (probe (λ () (udp-receive!* u (make-bytes 10) 11)))))

;; UDP: options
(scenario "udp/set-receive-buffer-size/huge"
          (let ([u (udp-open-socket)]) (probe (λ () (udp-set-receive-buffer-size! u (expt 2 40))))))
(scenario "udp/set-receive-buffer-size/int-max"
          (let ([u (udp-open-socket)]) (probe (λ () (udp-set-receive-buffer-size! u (sub1 (expt 2 31)))))))
(scenario "udp/set-receive-buffer-size/zero"
          (let ([u (udp-open-socket)]) (probe (λ () (udp-set-receive-buffer-size! u 0)))))
(scenario "udp/set-ttl/0" (let ([u (udp-open-socket)]) (probe (λ () (udp-set-ttl! u 0)))))
(scenario "udp/set-ttl/256" (let ([u (udp-open-socket)]) (probe (λ () (udp-set-ttl! u 256)))))
(scenario "udp/multicast-set-ttl/256" (let ([u (udp-open-socket)]) (probe (λ () (udp-multicast-set-ttl! u 256)))))
(scenario "udp/multicast-set-ttl/0" (let ([u (udp-open-socket)]) (probe (λ () (udp-multicast-set-ttl! u 0)))))

;; UDP: multicast groups (interface 127.0.0.1)
(scenario "udp/multicast-join/unicast"
          (let ([u (udp-bound)]) (probe (λ () (udp-multicast-join-group! u "127.0.0.1" "127.0.0.1")))))
(scenario "udp/multicast-join/ipv6-group"
          (let ([u (udp-bound)]) (probe (λ () (udp-multicast-join-group! u "ff02::1" "127.0.0.1")))))
(scenario "udp/multicast-join/name-not-address"
          (let ([u (udp-bound)]) (probe (λ () (udp-multicast-join-group! u "localhost" "127.0.0.1")))))
(scenario "udp/multicast-join/twice"
          (let ([u (udp-bound)])
            (udp-multicast-join-group! u G "127.0.0.1")
            (probe (λ () (udp-multicast-join-group! u G "127.0.0.1")))))
(scenario "udp/multicast-leave/not-joined"
          (let ([u (udp-bound)]) (probe (λ () (udp-multicast-leave-group! u G "127.0.0.1")))))

;; UDP: multicast interfaces
(scenario "udp/multicast-join/ipv6-interface"
          (let ([u (udp-bound)]) (probe (λ () (udp-multicast-join-group! u G "::1")))))
(scenario "udp/multicast-set-interface/ipv6"
          (let ([u (udp-open-socket)]) (probe (λ () (udp-multicast-set-interface! u "::1")))))
(scenario "udp/multicast-set-interface/not-local"
          (let ([u (udp-open-socket)]) (probe (λ () (udp-multicast-set-interface! u "192.0.2.1")))))

;; UDP: IPv4 multicast options on an IPv6 socket
(scenario "udp/multicast-join/ipv6-socket"
          (let ([u (udp6)]) (udp-bind! u "::1" 0) (probe (λ () (udp-multicast-join-group! u G "127.0.0.1")))))
(scenario "udp/multicast-ttl/ipv6-socket" (let ([u (udp6)]) (probe (λ () (udp-multicast-ttl u)))))
(scenario "udp/multicast-interface/ipv6-socket" (let ([u (udp6)]) (probe (λ () (udp-multicast-interface u)))))

;; UDP: every operation on a closed socket
(define-syntax-rule (closed-udp (u) op)
  (let ([u (udp-closed)]) (probe (λ () op))))
(scenario "udp/closed/udp-addresses" (closed-udp (u) (udp-addresses u #t)))
(scenario "udp/closed/udp-send-to" (closed-udp (u) (udp-send-to u "127.0.0.1" 9 #"x")))
(scenario "udp/closed/udp-send-to*" (closed-udp (u) (udp-send-to* u "127.0.0.1" 9 #"x")))
(scenario "udp/closed/udp-send" (closed-udp (u) (udp-send u #"x")))
(scenario "udp/closed/udp-receive!" (closed-udp (u) (udp-receive! u (make-bytes 10))))
(scenario "udp/closed/udp-receive!*" (closed-udp (u) (udp-receive!* u (make-bytes 10))))
(scenario "udp/closed/udp-set-receive-buffer-size!" (closed-udp (u) (udp-set-receive-buffer-size! u 65536)))
(scenario "udp/closed/udp-ttl" (closed-udp (u) (udp-ttl u)))
(scenario "udp/closed/udp-set-ttl!" (closed-udp (u) (udp-set-ttl! u 1)))
(scenario "udp/closed/udp-multicast-join-group!" (closed-udp (u) (udp-multicast-join-group! u G "127.0.0.1")))
(scenario "udp/closed/udp-multicast-leave-group!" (closed-udp (u) (udp-multicast-leave-group! u G "127.0.0.1")))
(scenario "udp/closed/udp-multicast-interface" (closed-udp (u) (udp-multicast-interface u)))
(scenario "udp/closed/udp-multicast-set-interface!" (closed-udp (u) (udp-multicast-set-interface! u "127.0.0.1")))
(scenario "udp/closed/udp-multicast-loopback?" (closed-udp (u) (udp-multicast-loopback? u)))
(scenario "udp/closed/udp-multicast-set-loopback!" (closed-udp (u) (udp-multicast-set-loopback! u #t)))
(scenario "udp/closed/udp-multicast-ttl" (closed-udp (u) (udp-multicast-ttl u)))
(scenario "udp/closed/udp-multicast-set-ttl!" (closed-udp (u) (udp-multicast-set-ttl! u 1)))
(scenario "udp/closed/udp-bound?" (closed-udp (u) (udp-bound? u)))
(scenario "udp/closed/udp-connected?" (closed-udp (u) (udp-connected? u)))
(scenario "udp/closed/sync-udp-receive-ready-evt" (closed-udp (u) (sync/timeout 0 (udp-receive-ready-evt u))))
(scenario "udp/closed/sync-udp-send-ready-evt" (closed-udp (u) (sync/timeout 0 (udp-send-ready-evt u))))
(scenario "udp/closed/sync-udp-receive!-evt" (closed-udp (u) (sync/timeout 0 (udp-receive!-evt u (make-bytes 10)))))
(scenario "udp/closed/sync-udp-send-to-evt" (closed-udp (u) (sync/timeout 0 (udp-send-to-evt u "127.0.0.1" 9 #"x"))))

;; ── runner ──────────────────────────────────────────────────────────────────────────────────
;; Each scenario runs in a child process of its own (`--one ID`): a Racket 8.7 bug can leave a
;; thread in atomic mode, which kills the whole process when the thread ends ("internal error:
;; terminated in atomic mode!"). The child prints its outcome from the scenario's own thread,
;; before that can happen; the parent records how the child ended.

(define (complete h)
  (for/fold ([h h]) ([k '(kind errno errno_family first_line message struct result crash)])
    (if (hash-has-key? h k) h (hash-set h k (json-null)))))

(define (emit h)
  (write-json (complete h))
  (newline)
  (flush-output))

(define (run-one id thunk)
  (define cust (make-custodian))
  (define th
    (parameterize ([current-custodian cust])
      (thread (λ ()
                (define outcome
                  (with-handlers ([(λ (e) #t) (λ (e) (hash-set (describe e) 'kind "setup-failed"))])
                    (thunk)))
                (emit (hash-set outcome 'scenario id))))))
  (unless (sync/timeout limit th)
    (emit (hasheq 'scenario id 'kind "timeout")))
  (custodian-shutdown-all cust))

(define racket-exe
  (let ([exe (find-system-path 'exec-file)])
    (if (absolute-path? exe) exe (or (find-executable-path exe) exe))))

(define (run-child id)
  (define-values (proc out in err)
    (subprocess #f #f #f racket-exe (path->string self) "--one" id))
  (close-output-port in)
  (define done (sync/timeout child-limit proc))
  (unless done (subprocess-kill proc #t))
  (define lines (for/list ([l (in-lines out)]) l))
  (define errors (for/list ([l (in-lines err)]) l))
  (close-input-port out)
  (close-input-port err)
  (define status (subprocess-status proc))
  (define crash
    (and (not (eqv? status 0)) (format "exit ~a: ~a" status (if (null? errors) "" (car errors)))))
  (define outcome
    (if (null? lines)
        (hasheq 'scenario id 'kind "crash")
        (string->jsexpr (car lines))))
  (emit (if crash (hash-set outcome 'crash crash) outcome)))

(module+ main
  (define args (vector->list (current-command-line-arguments)))
  (cond
    [(and (pair? args) (equal? (car args) "--one"))
     (define s (assoc (cadr args) scenarios))
     (unless s (error 'errors.rkt "no such scenario: ~a" (cadr args)))
     (run-one (car s) (cdr s))]
    [else
     (for ([s (reverse scenarios)]
           #:when (or (null? args) (member (car s) args)))
       (run-child (car s)))]))
