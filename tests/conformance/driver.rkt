#lang racket/base
;; The Racket driver of the conformance scenarios (README.md is the contract), one evaluator over
;; either implementation of racket/tcp and racket/udp:
;;
;;   racket tests/conformance/driver.rkt [--impl racket|broker] [SCENARIOS.json]
;;
;; - `--impl racket` (the default): Racket 8.7's own racket/tcp and racket/udp, a check that the
;;   scenarios say what Racket does. README.md, "Where the broker is not Racket 8.7", lists the
;;   steps where the broker departs on purpose (DECIDED below); those are reported as `decided`.
;; - `--impl broker`: the drop-in, sockbroker/tcp and sockbroker/udp (clients/racket, found
;;   through PLTCOLLECTS; the daemon through SOCKBROKER_URL and SOCKBROKER_TOKEN_FILE). The
;;   scenarios describe the broker, so nothing is decided: every difference is a failure.
;;
;; Either prints the JSON lines of README.md ("A driver's output") and exits 1 when a scenario
;; fails. The bindings come through `dynamic-require` from the implementation's two modules.
(require json racket/cmdline racket/list racket/runtime-path)

(define-runtime-path SCENARIOS "scenarios.json")

;; Where the broker departs from Racket 8.7 on purpose: (scenario id . step index) → why. Such a
;; step is reported and the scenario goes on; any other difference is a failure.
(define CLOSED-LISTENER "a closed listener is exn:fail:network (8.7: exn:fail:contract)")
(define POLICY "the broker's policy refuses it (Racket has no policy)")
(define DECIDED
  (hash '("tcp-listener-close" . 2) CLOSED-LISTENER
        '("tcp-listener-close" . 3) CLOSED-LISTENER
        '("tcp-listener-close" . 4) CLOSED-LISTENER
        '("custodian-shutdown-closes-sockets" . 7) CLOSED-LISTENER
        '("custodian-shutdown-closes-sockets" . 10)
        "a UDP socket its custodian closed is closed (8.7: udp-send-to on it returns as if it sent)"
        '("custodian-shutdown-closes-sockets" . 12) "a shut-down custodian is exn:fail:contract (8.7: exn:fail)"
        '("custodian-nested" . 5) CLOSED-LISTENER
        '("udp-bind-errors" . 2) "udp-bind! twice is exn:fail:network (8.7: exn:fail:contract)"
        '("tcp-policy-denied" . 0) POLICY
        '("tcp-policy-denied" . 1) POLICY
        '("udp-policy-denied" . 1) POLICY
        '("udp-policy-denied" . 2) POLICY))

;; An implementation: its two modules, the door it reports, the departures it may show, and the
;; broker kinds that have no Racket struct of their own, by the errno it raises them with. The
;; drop-in raises a policy refusal (`permission-denied`) as exn:fail:network:errno with EACCES
;; (clients/racket/README.md), so that errno is that kind through it.
(struct impl (tcp-module udp-module door decided errno-kinds))
(define IMPLEMENTATIONS
  (hash "racket" (impl 'racket/tcp 'racket/udp "racket/tcp" DECIDED (hash))
        "broker" (impl 'sockbroker/tcp 'sockbroker/udp "sockbroker/tcp" (hash)
                       (hash '(13 . posix) "permission-denied"))))
(define current-impl (make-parameter (hash-ref IMPLEMENTATIONS "racket")))
(define (tcp name) (dynamic-require (impl-tcp-module (current-impl)) name))
(define (udp name) (dynamic-require (impl-udp-module (current-impl)) name))

(define (none v) (if (eq? v 'null) #f v))
(define (values->list thunk) (call-with-values thunk list))
(define (filled size proc)
  (define buffer (make-bytes size))
  (define got (proc buffer))
  (if (eof-object? got) got (subbytes buffer 0 got)))

;; Racket's name → a procedure of the step's evaluated arguments, in Racket's order.
(define OPERATIONS
  (hash
   "tcp-listen" (lambda (port [backlog 4] [reuse #f] [host 'null]) ((tcp 'tcp-listen) port backlog reuse (none host)))
   "tcp-connect" (lambda (host port [lh 'null] [lp 'null])
                   (values->list (lambda () ((tcp 'tcp-connect) host port (none lh) (none lp)))))
   "tcp-accept" (lambda (l) (values->list (lambda () ((tcp 'tcp-accept) l))))
   "tcp-accept-ready?" (lambda (l) ((tcp 'tcp-accept-ready?) l))
   "tcp-close" (lambda (l) ((tcp 'tcp-close) l))
   "tcp-addresses" (lambda (h [numbers #f]) (values->list (lambda () ((tcp 'tcp-addresses) h numbers))))
   "tcp-listener?" (lambda (h) ((tcp 'tcp-listener?) h))
   "tcp-port?" (lambda (h) ((tcp 'tcp-port?) h))
   "read-bytes" (lambda (n in) (read-bytes n in))
   "read-bytes-avail!" (lambda (n in) (filled n (lambda (b) (read-bytes-avail! b in))))
   "read-bytes-avail!*" (lambda (n in) (filled n (lambda (b) (read-bytes-avail!* b in))))
   "peek-bytes-avail!" (lambda (n in) (filled n (lambda (b) (peek-bytes-avail! b 0 #f in))))
   "write-bytes" (lambda (data out) (write-bytes data out))
   "flush-output" (lambda (out) (flush-output out))
   "close-input-port" (lambda (in) (close-input-port in))
   "close-output-port" (lambda (out) (close-output-port out))
   "udp-open-socket" (lambda ([host 'null] [port 'null]) ((udp 'udp-open-socket) (none host) (none port)))
   "udp-bind!" (lambda (s host port [reuse #f]) ((udp 'udp-bind!) s (none host) port reuse))
   "udp-connect!" (lambda (s host port) ((udp 'udp-connect!) s (none host) (none port)))
   "udp-send-to" (lambda (s host port data) ((udp 'udp-send-to) s host port data))
   "udp-send" (lambda (s data) ((udp 'udp-send) s data))
   "udp-receive!" (lambda (s n) (datagram n (lambda (b) ((udp 'udp-receive!) s b))))
   "udp-receive!*" (lambda (s n) (datagram n (lambda (b) ((udp 'udp-receive!*) s b))))
   "udp-close" (lambda (s) ((udp 'udp-close) s))
   "udp-bound?" (lambda (s) ((udp 'udp-bound?) s))
   "udp-connected?" (lambda (s) ((udp 'udp-connected?) s))
   "udp-addresses" (lambda (s [numbers #f]) (values->list (lambda () ((udp 'udp-addresses) s numbers))))
   "make-custodian" (lambda ([parent 'null]) (make-custodian (or (none parent) (current-custodian))))
   "custodian-shutdown-all" (lambda (c) (custodian-shutdown-all c))
   "tcp-accept-evt" (lambda (l) (event ((tcp 'tcp-accept-evt) l)))
   "udp-receive-ready-evt" (lambda (s) (event (wrap-evt ((udp 'udp-receive-ready-evt) s) (lambda (_) #t))))
   "sync/timeout" (lambda (seconds . events) (or (apply sync/timeout seconds (map event-evt events)) #f))))

(struct event (evt))

(define (datagram size proc)
  (define buffer (make-bytes size))
  (define-values (count host port) (proc buffer))
  (if count (list count host port (subbytes buffer 0 count)) (list #f #f #f #f)))

(define (kind-of e)
  (cond [(exn:break? e) "exn:break"]
        [(exn:fail:network:errno? e)
         (hash-ref (impl-errno-kinds (current-impl)) (exn:fail:network:errno-errno e) "exn:fail:network:errno")]
        [(exn:fail:network? e) "exn:fail:network"]
        [(exn:fail:contract? e) "exn:fail:contract"]
        [(exn:fail? e) "exn:fail"]
        [else "not an exn:fail"]))

(struct failed (detail))
(define (fail! fmt . args) (raise (failed (apply format fmt args))))

(define (show v)
  (cond [(eof-object? v) "eof"]
        [(void? v) "null"]
        [(list? v) (format "[~a]" (string-join* (map show v)))]
        [(event? v) "<event>"]
        [else (format "~s" v)]))
(define (string-join* strings) (apply string-append (add-between strings ", ")))

(define (run-scenario scenario timeout)
  (define env (make-hash))
  (define departures '())
  (define (bound name) (hash-ref env name (lambda () (fail! "~a is not bound" name))))
  (define (port-of name)
    (define h (bound name))
    (define-values (_lh lp _rh _rp)
      (if ((udp 'udp?) h) ((udp 'udp-addresses) h #t) ((tcp 'tcp-addresses) h #t)))
    lp)
  (define (evaluate x)
    (cond [(not (hash? x)) x]
          [(hash-has-key? x 'ref) (bound (hash-ref x 'ref))]
          [(hash-has-key? x 'port-of) (port-of (hash-ref x 'port-of))]
          [(hash-has-key? x 'bytes) (string->bytes/utf-8 (hash-ref x 'bytes))]
          [(hash-has-key? x 'hex) (hex->bytes (hash-ref x 'hex))]
          [(hash-has-key? x 'random)
           (define data (apply bytes (for/list ([_ (hash-ref x 'random)]) (random 256))))
           (hash-set! env (hash-ref x 'as) data)
           data]
          [else (fail! "unknown expression ~s" x)]))
  (define (match? expected v)
    (cond [(list? expected) (and (list? v) (= (length v) (length expected)) (andmap match? expected v))]
          [(eq? expected 'null) (void? v)]
          [(not (hash? expected)) (equal? expected v)]
          [(hash-has-key? expected 'type) (has-type? (hash-ref expected 'type) v)]
          [(hash-has-key? expected 'eof) (eof-object? v)]
          [else (let ([want (evaluate expected)]) (if (bytes? want) (equal? want v) (eqv? want v)))]))
  (define (has-type? t v)
    (case t
      [("listener") ((tcp 'tcp-listener?) v)]
      [("input-port") (input-port? v)]
      [("output-port") (output-port? v)]
      [("udp") ((udp 'udp?) v)]
      [("custodian") (custodian? v)]
      [("event") (event? v)]
      [("boolean") (boolean? v)]
      [("integer") (exact-integer? v)]
      [("port-number") (and (exact-integer? v) (<= 1 v 65535))]
      [("string") (string? v)]
      [("bytes") (bytes? v)]
      [else #f]))
  (define (run-step step)
    (define op (hash-ref step 'op))
    (define args (map evaluate (hash-ref step 'args '())))
    (define custodian (and (hash-has-key? step 'custodian) (evaluate (hash-ref step 'custodian))))
    (define expected (hash-ref step 'expect (lambda () (void))))
    (define error-expected (and (hash? expected) (hash-ref expected 'error #f)))
    (define (call) (parameterize ([current-custodian (or custodian (current-custodian))])
                     (apply (hash-ref OPERATIONS op) args)))
    (define result (bounded call timeout))
    (cond
      [(exn? result)
       (unless error-expected (fail! "raised ~a: ~a" (kind-of result) (exn-message result)))
       (define kind (kind-of result))
       (define first-line (car (regexp-split #rx"\n" (exn-message result))))
       (define errno (and (exn:fail:network:errno? result)
                          (let ([p (exn:fail:network:errno-errno result)]) (list (car p) (symbol->string (cdr p))))))
       (unless (equal? kind (hash-ref error-expected 'kind))
         (fail! "expected error ~a, got ~a: ~a" (hash-ref error-expected 'kind) kind first-line))
       (when (and (hash-has-key? error-expected 'errno) (not (equal? errno (hash-ref error-expected 'errno))))
         (fail! "expected errno ~s, got ~s" (hash-ref error-expected 'errno) errno))
       (when (and (hash-has-key? error-expected 'message) (not (equal? first-line (hash-ref error-expected 'message))))
         (fail! "expected message ~s, got ~s" (hash-ref error-expected 'message) first-line))]
      [error-expected (fail! "expected error ~a, got ~a" (hash-ref error-expected 'kind) (show result))]
      [else
       (when (and (hash-has-key? step 'expect) (not (match? expected result)))
         (fail! "expected ~a, got ~a" (jsexpr->string expected) (show result)))
       (define names (hash-ref step 'as #f))
       (cond [(string? names) (hash-set! env names result)]
             [(list? names)
              (unless (and (list? result) (= (length result) (length names)))
                (fail! "cannot bind ~a names to ~a" (length names) (show result)))
              (for ([name names] [v result] #:unless (eq? name 'null)) (hash-set! env name v))])]))
  (for ([step (hash-ref scenario 'steps)] [index (in-naturals)])
    (define why (hash-ref (impl-decided (current-impl)) (cons (hash-ref scenario 'id) index) #f))
    (with-handlers ([failed? (lambda (f)
                               (unless why (raise (list index (hash-ref step 'op) (failed-detail f))))
                               (set! departures (cons (format "step ~a: ~a" index why) departures)))])
      (run-step step)))
  (reverse departures))

;; The thunk's single value or list of values, or the exception it raised; a timeout is a failure.
(define (bounded thunk seconds)
  (define box (make-channel))
  (define worker (thread (lambda ()
                           (channel-put box (list (with-handlers ([(lambda (_) #t) values]) (thunk)))))))
  (define got (sync/timeout seconds box))
  (unless got (kill-thread worker) (fail! "timed out after ~a s" seconds))
  (car got))

(define (hex->bytes s)
  (apply bytes (for/list ([i (in-range 0 (string-length s) 2)]) (string->number (substring s i (+ i 2)) 16))))

(module+ main
  (define file
    (command-line
     #:program "driver.rkt"
     #:once-each
     [("--impl") name "racket (racket/tcp, racket/udp; the default) or broker (sockbroker/tcp, sockbroker/udp)"
                 (current-impl (hash-ref IMPLEMENTATIONS name
                                         (lambda () (raise-user-error 'driver.rkt "--impl: ~s is not racket or broker" name))))]
     #:args ([scenarios (path->string SCENARIOS)]) scenarios))
  (define document (call-with-input-file file read-json))
  (unless (equal? (hash-ref document 'version) 1) (raise-user-error 'driver.rkt "~a: version ~s, not 1" file (hash-ref document 'version)))
  (define timeout (hash-ref document 'step_timeout_seconds))
  ;; Instantiate the implementation here, under the main custodian, as a program's `require`
  ;; would: the drop-in's connection to the daemon must not belong to a scenario's custodian.
  (dynamic-require (impl-tcp-module (current-impl)) #f)
  (dynamic-require (impl-udp-module (current-impl)) #f)
  (define door (impl-door (current-impl)))
  (write-json (hasheq 'driver "racket" 'door door 'unsupported '()))
  (newline)
  (define failures
    (for/sum ([scenario (hash-ref document 'scenarios)])
      (define id (hash-ref scenario 'id))
      ;; The scenario's custodian stands for its session: shutting it down closes what it left
      ;; open (through the drop-in, in the daemon too, before the next call).
      (define owner (make-custodian))
      (define line
        (with-handlers ([list? (lambda (l) (hasheq 'outcome "fail" 'step (first l) 'op (second l) 'detail (third l)))])
          (define departures (parameterize ([current-custodian owner]) (run-scenario scenario timeout)))
          (if (null? departures) (hasheq 'outcome "pass") (hasheq 'outcome "decided" 'departures departures))))
      (custodian-shutdown-all owner)
      (write-json (hash-set* line 'id id 'door door))
      (newline)
      (if (equal? (hash-ref line 'outcome) "fail") 1 0)))
  (exit (if (zero? failures) 0 1)))
