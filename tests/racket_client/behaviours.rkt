#lang racket/base
;; The seed's behaviours, written once over a table of bindings (names.rkt): the differential
;; test runs each over racket/tcp + racket/udp and over sockbroker/tcp + sockbroker/udp and
;; compares the outcomes. An outcome is plain data: results (ephemeral port numbers reduced to
;; facts about them, a void result as 'void), or (raise KIND ERRNO) for an exception.
;; Loopback only (127.0.0.1), ports 0; every wait is bounded.
(require racket/list "names.rkt")

(provide behaviours outcome-of)

(define (kind-of e)
  (cond [(exn:break? e) 'exn:break]
        [(exn:fail:network:errno? e) 'exn:fail:network:errno]
        [(exn:fail:network? e) 'exn:fail:network]
        [(exn:fail:contract? e) 'exn:fail:contract]
        [(exn:fail? e) 'exn:fail]
        [else 'exn]))

;; The outcome of a thunk: its results as a list, or (raise kind errno).
(define (outcome-of thunk)
  (with-handlers ([exn? (λ (e) (list 'raise (kind-of e)
                                     (and (exn:fail:network:errno? e) (exn:fail:network:errno-errno e))))])
    (call-with-values thunk (λ results (map (λ (v) (if (void? v) 'void v)) results)))))

(define-syntax-rule (try e ...) (outcome-of (λ () e ...)))

(define (port-fact p) (cond [(eqv? p 0) 0] [(and (exact-integer? p) (<= 1 p 65535)) 'port] [else p]))

;; A listener on 127.0.0.1 and a connected pair: (values listener port client-in client-out
;; server-in server-out).
(define (pair t)
  (with-impl t
    (define l (tcp-listen 0 4 #t "127.0.0.1"))
    (define-values (_h port _rh _rp) (tcp-addresses l #t))
    (define-values (ci co) (tcp-connect "127.0.0.1" port))
    (define-values (si so) (tcp-accept l))
    (values l port ci co si so)))

(define (listen-connect-accept t)
  (with-impl t
    (define l (tcp-listen 0 4 #t "127.0.0.1"))
    (define-values (lh lp rh rp) (tcp-addresses l #t))
    (define ready-before (tcp-accept-ready? l))
    (define-values (ci co) (tcp-connect "127.0.0.1" lp))
    (define ready-after (sync/timeout 5 l))
    (define-values (si so) (tcp-accept l))
    (list lh (port-fact lp) rh rp ready-before (eq? ready-after l) (tcp-accept-ready? l)
          (tcp-listener? l) (tcp-listener? ci) (tcp-port? ci) (tcp-port? so) (tcp-port? l)
          (input-port? ci) (output-port? co))))

(define (read-write-both-ways t)
  (with-impl t
    (define-values (l port ci co si so) (pair t))
    (write-string "hello\nsecond line\n" co)
    (flush-output co)
    (define a (read-line si))
    (define b (read-line si))
    (write-bytes #"pong" so)
    (flush-output so)
    (define c (read-bytes 4 ci))
    (define big (make-bytes 100000 65))
    (define writer (thread (λ () (write-bytes big co) (flush-output co))))
    (define got (read-bytes 100000 si))
    (sync/timeout 10 writer)
    (list a b c (equal? got big))))

(define (half-close t)
  (with-impl t
    (define-values (l port ci co si so) (pair t))
    (write-string "last words" co)
    (close-output-port co)
    (define got (read-bytes 100 si))
    (define then (read-bytes 1 si))
    (write-string "reply after half-close" so)
    (flush-output so)
    (define reply (read-bytes 22 ci))
    (close-output-port so)
    (list got (eof-object? then) reply (eof-object? (read-byte ci)))))

(define (addresses t)
  (with-impl t
    (define-values (l port ci co si so) (pair t))
    (define-values (cl cr) (tcp-addresses ci))
    (define-values (cl* clp cr* crp) (tcp-addresses co #t))
    (define-values (sl slp sr srp) (tcp-addresses si #t))
    (list cl cr cl* cr* (= crp port) (= clp srp) (= slp port) sl sr)))

(define (accept-ready-and-evt t)
  (with-impl t
    (define l (tcp-listen 0 4 #t "127.0.0.1"))
    (define-values (_h port _r _rp) (tcp-addresses l #t))
    (define before (list (tcp-accept-ready? l) (sync/timeout 0 l) (sync/timeout 0.2 (tcp-accept-evt l))))
    (define-values (ci co) (tcp-connect "127.0.0.1" port))
    (define chosen (sync/timeout 5 (tcp-accept-evt l)))
    (define shape (and (list? chosen) (map (λ (p) (and (tcp-port? p) (if (input-port? p) 'in 'out))) chosen)))
    ;; the chosen event took the connection: nothing is left
    (define after (tcp-accept-ready? l))
    ;; an accept event that is not chosen takes nothing: `sync` picks at random between two
    ;; ready events, and every connection is either taken by a chosen event or still queued
    (define clients (for/list ([i 3]) (call-with-values (λ () (tcp-connect "127.0.0.1" port)) list)))
    (define taken (for/sum ([i 6]) (if (list? (sync/timeout 5 always-evt (tcp-accept-evt l))) 1 0)))
    (define queued (let loop ([n 0]) (if (sync/timeout 0.5 l) (begin (tcp-accept l) (loop (add1 n))) n)))
    (list before shape after (+ taken queued))))

(define (buffer-modes t)
  (with-impl t
    (define-values (l port ci co si so) (pair t))
    (define modes (list (file-stream-buffer-mode co) (file-stream-buffer-mode ci)))
    (write-string "held" co)
    (define held (sync/timeout 0.3 si)) ; block mode: nothing sent before a flush
    (flush-output co)
    (define sent (read-bytes 4 si))
    (file-stream-buffer-mode co 'none)
    (write-string "now" co)
    (define direct (read-bytes 3 si))
    (file-stream-buffer-mode co 'line)
    (write-string "line\n" co)
    (define line (read-line si))
    (list modes (and held #t) sent direct line (file-stream-buffer-mode co)
          (try (file-stream-buffer-mode ci 'line)))))

(define (peek-and-ready t)
  (with-impl t
    (define-values (l port ci co si so) (pair t))
    (define idle (list (sync/timeout 0.2 si) (byte-ready? si) (read-bytes-avail!* (make-bytes 5) si)))
    (write-string "peekable" co)
    (flush-output co)
    (define ready (eq? (sync/timeout 5 si) si))
    (define peeked (peek-bytes 4 0 si))
    (define peeked-skip (peek-bytes 4 4 si))
    (define read (read-bytes 8 si))
    (list idle ready peeked peeked-skip read)))

(define (abandon t)
  (with-impl t
    (define-values (l port ci co si so) (pair t))
    (write-string "x" co)
    (tcp-abandon-port co)
    (define got (read-bytes 1 si))
    (define no-eof (sync/timeout 0.3 si)) ; no FIN while the input port is open
    (close-input-port ci)
    (define eof-now (and (sync/timeout 5 si) (eof-object? (read-byte si))))
    (list got no-eof eof-now (try (write-string "y" co)))))

(define (listener-close t)
  (with-impl t
    (define l (tcp-listen 0 4 #t "127.0.0.1"))
    (define-values (_h port _r _rp) (tcp-addresses l #t))
    (tcp-close l)
    (list (try (tcp-connect "127.0.0.1" port))
          (try (tcp-close l))
          (try (tcp-accept-ready? l))
          (try (tcp-accept l)))))

(define (errors-tcp t)
  (with-impl t
    (define l (tcp-listen 0 4 #f "127.0.0.1"))
    (define-values (_h port _r _rp) (tcp-addresses l #t))
    (list (try (tcp-listen port 4 #f "127.0.0.1"))
          (try (tcp-listen 70000))
          (try (tcp-listen -1))
          (try (tcp-listen 0 -1))
          (try (tcp-connect "127.0.0.1" 0))
          (try (tcp-connect 'localhost 80))
          (try (tcp-connect "127.0.0.1" port "127.0.0.1"))
          (try (tcp-accept 'not-a-listener))
          (try (tcp-close "nope"))
          (try (tcp-addresses 42))
          (try (tcp-abandon-port (open-input-bytes #"")))
          (list (port-number? 0) (port-number? 1) (port-number? 65535) (port-number? 65536)
                (listen-port-number? 0) (listen-port-number? -1)))))

(define (refused t)
  (with-impl t
    (define l (tcp-listen 0 4 #t "127.0.0.1"))
    (define-values (_h port _r _rp) (tcp-addresses l #t))
    (tcp-close l)
    (try (tcp-connect "127.0.0.1" port))))

;; ── UDP ───────────────────────────────────────────────────────────────────────────────────────
(define (udp-pair t)
  (with-impl t
    (define a (udp-open-socket))
    (define b (udp-open-socket))
    (udp-bind! a "127.0.0.1" 0)
    (define-values (_h port _r _rp) (udp-addresses a #t))
    (values a b port)))

(define (udp-basics t)
  (with-impl t
    (define fresh (udp-open-socket))
    (define states (list (udp? fresh) (udp? 5) (udp-bound? fresh) (udp-connected? fresh)))
    (define-values (a b port) (udp-pair t))
    (udp-send-to b "127.0.0.1" port #"hello world" 6)
    (define buf (make-bytes 20 0))
    (define-values (n host from) (udp-receive! a buf 2))
    (define-values (bh bp) (let-values ([(h p _r _rp) (udp-addresses b #t)]) (values h p)))
    (udp-connect! b "127.0.0.1" port)
    (define connected (list (udp-bound? b) (udp-connected? b)))
    (udp-send b #"0123456789" 2 5)
    (define-values (n2 h2 p2) (udp-receive! a buf))
    (define got2 (subbytes buf 0 n2))
    ;; a datagram longer than the buffer is cut, the rest discarded
    (udp-send b #"truncated!")
    (define small (make-bytes 4))
    (define-values (n3 _h3 _p3) (udp-receive! a small))
    (define after (call-with-values (λ () (udp-receive!* a buf)) list))
    (define-values (bl blp br brp) (udp-addresses b #t))
    (udp-connect! b #f #f)
    (list states n host (= from bp) (subbytes buf 0 8) connected got2 n3 small after
          bl br (= brp port) (udp-connected? b) (udp-send-to* b "127.0.0.1" port #"star")
          (let-values ([(n h p) (udp-receive! a buf)]) (subbytes buf 0 n)))))

(define (udp-errors t)
  (with-impl t
    (define-values (a b port) (udp-pair t))
    (define c (udp-open-socket))
    (list (try (udp-send b #"x"))
          (try (udp-connect! b "127.0.0.1" port) (udp-send-to b "127.0.0.1" port #"x"))
          (try (udp-bind! a "127.0.0.1" 0))
          (try (udp-connect! c "127.0.0.1" #f))
          (try (udp-send-to c "127.0.0.1" port #"abc" 4))
          (try (udp-send-to c "127.0.0.1" port #"abc" 2 1))
          (try (udp-send-to c "127.0.0.1" 0 #"abc"))
          (try (udp-receive! a (make-bytes 3) 0 4))
          (try (udp-set-ttl! a 300))
          (try (udp-bind! 'nope "127.0.0.1" 0))
          (try (udp-close c))
          (try (udp-close c))
          (try (udp-bind! c "127.0.0.1" 0))
          (try (udp-send-to c "127.0.0.1" port #"x"))
          (try (udp-addresses c)))))

(define (udp-options t)
  (with-impl t
    (define-values (a b port) (udp-pair t))
    (udp-set-ttl! a 7)
    (udp-multicast-set-ttl! a 1)
    (udp-multicast-set-loopback! a #f)
    (define lo1 (udp-multicast-loopback? a))
    (udp-multicast-set-loopback! a #t)
    (udp-set-receive-buffer-size! a 65536)
    (list (udp-ttl a) (udp-multicast-ttl a) lo1 (udp-multicast-loopback? a)
          (udp-multicast-interface a)
          (try (udp-multicast-set-interface! a "127.0.0.1") (udp-multicast-interface a))
          (try (udp-multicast-join-group! a "127.0.0.1" "127.0.0.1")))))

(define (udp-multicast t)
  (with-impl t
    (define r (udp-open-socket))
    (udp-bind! r "0.0.0.0" 0) ; a group's datagrams reach a socket bound to the wildcard
    (define-values (_h port _r _rp) (udp-addresses r #t))
    (define s (udp-open-socket))
    (define steps
      (list (try (udp-multicast-join-group! r "239.255.77.77" "127.0.0.1"))
            (try (udp-multicast-set-interface! s "127.0.0.1"))
            (try (udp-multicast-set-ttl! s 1))
            (try (udp-send-to s "239.255.77.77" port #"to the group"))))
    (define buf (make-bytes 64))
    (define got (try (let-values ([(n h p) (udp-receive! r buf)]) (subbytes buf 0 n))))
    (list steps got (try (udp-multicast-leave-group! r "239.255.77.77" "127.0.0.1")))))

(define (udp-events t)
  (with-impl t
    (define-values (a b port) (udp-pair t))
    (define buf (make-bytes 10 42))
    (define rready (udp-receive-ready-evt a))
    (define idle (list (sync/timeout 0.2 (udp-receive!-evt a buf)) (sync/timeout 0 rready) buf))
    (define sready (udp-send-ready-evt b))
    (define send-ready (eq? (sync/timeout 5 sready) sready))
    (define sent (sync/timeout 5 (udp-send-to-evt b "127.0.0.1" port #"evt-data")))
    (define ready (eq? (sync/timeout 5 rready) rready))
    (define chosen (sync/timeout 5 (udp-receive!-evt a buf 1)))
    ;; an event that is not chosen receives nothing: `sync` picks at random between two ready
    ;; events, and every datagram is either received by a chosen event or still queued
    (for ([i 4]) (udp-send-to b "127.0.0.1" port #"more"))
    (sleep 0.1)
    (define scratch (make-bytes 10))
    (define taken (for/sum ([i 8]) (if (list? (sync/timeout 5 always-evt (udp-receive!-evt a scratch))) 1 0)))
    (define queued (let loop ([n 0]) (if (sync/timeout 0.5 (udp-receive!-evt a scratch)) (loop (add1 n)) n)))
    (udp-connect! b "127.0.0.1" port)
    (define sent2 (sync/timeout 5 (udp-send-evt b #"second")))
    (define chosen2 (sync/timeout 5 (udp-receive!-evt a buf)))
    (list idle send-ready (void? sent) ready (+ taken queued)
          (and chosen (list (car chosen) (cadr chosen) (= (caddr chosen) (let-values ([(h p _r _rp) (udp-addresses b #t)]) p))))
          (void? sent2) (and chosen2 (car chosen2)) buf)))

;; ── breaks and custodians ─────────────────────────────────────────────────────────────────────
;; Run `thunk` in a thread with breaks disabled (as /enable-break's promise is about), break it
;; after `delay` seconds, and report what it did.
(define (broken thunk delay)
  (define result #f)
  (define th (thread (λ () (parameterize-break #f (set! result (outcome-of thunk))))))
  (sleep delay)
  (break-thread th)
  (sync/timeout 10 th)
  result)

(define (breaks t)
  (with-impl t
    (define l (tcp-listen 0 4 #t "127.0.0.1"))
    (define-values (_h port _r _rp) (tcp-addresses l #t))
    (define accept-broken (broken (λ () (tcp-accept/enable-break l)) 0.3))
    (define-values (ci co) (tcp-connect "127.0.0.1" port))
    (define kept (eq? (sync/timeout 5 l) l))
    (define-values (si so) (tcp-accept l))
    (define-values (a b uport) (udp-pair t))
    (define buf (make-bytes 10))
    (define receive-broken (broken (λ () (udp-receive!/enable-break a buf)) 0.3))
    (udp-send-to b "127.0.0.1" uport #"kept")
    (define received (let-values ([(n h p) (udp-receive! a buf)]) (subbytes buf 0 n)))
    (define read-broken (broken (λ () (read-bytes-avail!/enable-break (make-bytes 4) si)) 0.3))
    (write-string "data" co)
    (flush-output co)
    (define read-kept (read-bytes 4 si))
    (list (and accept-broken (car accept-broken)) (and accept-broken (cadr accept-broken))
          kept
          (and receive-broken (cadr receive-broken)) received
          (and read-broken (cadr read-broken)) read-kept)))

;; Breaks racing with connections: each round, either the accept returned a connection or the
;; break came and the connection is still there to accept. Never both, never neither.
(define (break-race t)
  (with-impl t
    (define l (tcp-listen 0 16 #t "127.0.0.1"))
    (define-values (_h port _r _rp) (tcp-addresses l #t))
    (for/list ([i (in-range 6)])
      (define result #f)
      (define th (thread (λ () (parameterize-break #f
                                 (set! result (outcome-of (λ () (tcp-accept/enable-break l))))))))
      (define-values (ci co) (tcp-connect "127.0.0.1" port))
      (sleep (* i 0.01))
      (break-thread th)
      (sync/timeout 10 th)
      (define accepted (and result (= (length result) 2)))
      (define left (if accepted (sync/timeout 0.3 l) (sync/timeout 5 l)))
      (when (and (not accepted) left) (tcp-accept l))
      ;; which of the two happened is a race (and differs between the libraries): only the
      ;; promise is compared
      (and (or (and accepted (not left)) (and (not accepted) (eq? left l))) #t))))

(define (custodians t)
  (with-impl t
    (define c (make-custodian))
    (define l (parameterize ([current-custodian c]) (tcp-listen 0 4 #t "127.0.0.1")))
    (define-values (_h port _r _rp) (tcp-addresses l #t))
    (define u (parameterize ([current-custodian c]) (udp-open-socket)))
    (custodian-shutdown-all c)
    ;; the broker closes the custodian's sockets from a thread of its own: wait (5 s at most)
    ;; for the listener to go rather than guess how long that takes on a loaded machine
    (define refused
      (let loop ([n 0])
        (define r (try (tcp-connect "127.0.0.1" port)))
        (if (or (eq? (car r) 'raise) (>= n 50)) r (begin (sleep 0.1) (loop (add1 n))))))
    (list refused
          (try (parameterize ([current-custodian c]) (tcp-listen 0 4 #t "127.0.0.1")))
          (try (udp-bind! u "127.0.0.1" 0)))))

(define behaviours
  (list (cons 'listen-connect-accept listen-connect-accept)
        (cons 'read-write-both-ways read-write-both-ways)
        (cons 'half-close half-close)
        (cons 'addresses addresses)
        (cons 'accept-ready-and-evt accept-ready-and-evt)
        (cons 'buffer-modes buffer-modes)
        (cons 'peek-and-ready peek-and-ready)
        (cons 'abandon abandon)
        (cons 'listener-close listener-close)
        (cons 'errors-tcp errors-tcp)
        (cons 'refused refused)
        (cons 'udp-basics udp-basics)
        (cons 'udp-errors udp-errors)
        (cons 'udp-options udp-options)
        (cons 'udp-multicast udp-multicast)
        (cons 'udp-events udp-events)
        (cons 'breaks breaks)
        (cons 'break-race break-race)
        (cons 'custodians custodians)))
