#lang racket/base
;; sockbroker/tcp: every binding of racket/tcp, over the broker's sockets.
;; Swap `(require racket/tcp)` for `(require sockbroker/tcp)`; see README.md for what differs.
(require "private/broker.rkt"
         "private/check.rkt"
         "private/evt.rkt"
         "private/ports.rkt"
         (only-in "private/udp-struct.rkt" udp? udp-handle))

(provide tcp-listen
         tcp-connect
         tcp-connect/enable-break
         tcp-accept
         tcp-accept/enable-break
         tcp-accept-ready?
         tcp-close
         tcp-listener?
         tcp-accept-evt
         tcp-abandon-port
         tcp-addresses
         tcp-port?
         port-number?
         listen-port-number?)

;; A listener is an event, ready when tcp-accept would not block; its result is the listener.
(struct tcp-listener (handle)
  #:property prop:evt
  (λ (self)
    (broker-evt (hasheq 'listener_ready (hasheq 'listener (tcp-listener-handle self)))
                (λ (_) self)))
  #:property prop:custom-write
  (λ (self out mode) (write-string "#<tcp-listener>" out)))

(define (tcp-listen port-no [max-allow-wait 4] [reuse? #f] [hostname #f])
  (check 'tcp-listen listen-port-number? "listen-port-number?" port-no)
  (check 'tcp-listen exact-nonnegative-integer? "exact-nonnegative-integer?" max-allow-wait)
  (check 'tcp-listen (λ (v) (or (not v) (string? v))) "(or/c string? #f)" hostname)
  (define custodian (current-daemon-custodian 'tcp-listen))
  (define reply
    (call "POST" "/v1/tcp/listeners"
          (fields 'port port-no 'backlog (min max-allow-wait 65535) 'reuse (and reuse? #t)
                  'hostname (opt hostname) 'custodian (opt custodian))))
  (tcp-listener (hash-ref reply 'listener)))

(define (ports-of reply)
  (make-tcp-ports (hash-ref reply 'in) (hash-ref reply 'out)))

(define (connect who hostname port-no local-hostname local-port-no enable-break?)
  (check who string? "string?" hostname)
  (check who port-number? "port-number?" port-no)
  (check who (λ (v) (or (not v) (string? v))) "(or/c string? #f)" local-hostname)
  (check who (λ (v) (or (not v) (port-number? v))) "(or/c port-number? #f)" local-port-no)
  (define custodian (current-daemon-custodian who))
  (ports-of
   (blocking-call "POST" "/v1/tcp/connections"
                  (fields 'hostname hostname 'port port-no 'local_hostname (opt local-hostname)
                          'local_port (opt local-port-no) 'custodian (opt custodian))
                  #:enable-break? enable-break?)))

(define (tcp-connect hostname port-no [local-hostname #f] [local-port-no #f])
  (connect 'tcp-connect hostname port-no local-hostname local-port-no (break-enabled)))

(define (tcp-connect/enable-break hostname port-no [local-hostname #f] [local-port-no #f])
  (connect 'tcp-connect/enable-break hostname port-no local-hostname local-port-no #t))

(define (check-listener who v)
  (check who tcp-listener? "tcp-listener?" v))

(define (accept who listener enable-break?)
  (check-listener who listener)
  (define custodian (current-daemon-custodian who))
  (ports-of
   (blocking-call "POST" (format "/v1/tcp/listeners/~a/accept" (tcp-listener-handle listener))
                  (fields 'custodian (opt custodian))
                  #:enable-break? enable-break?)))

(define (tcp-accept listener) (accept 'tcp-accept listener (break-enabled)))
(define (tcp-accept/enable-break listener) (accept 'tcp-accept/enable-break listener #t))

(define (tcp-accept-ready? listener)
  (check-listener 'tcp-accept-ready? listener)
  (hash-ref (call "GET" (format "/v1/tcp/listeners/~a/ready" (tcp-listener-handle listener))) 'ready))

(define (tcp-close listener)
  (check-listener 'tcp-close listener)
  (call "DELETE" (format "/v1/tcp/listeners/~a" (tcp-listener-handle listener)))
  (void))

;; Ready when tcp-accept would not block; when chosen, the accepted ports as a list. The ports
;; go to the custodian that is current when tcp-accept-evt is called.
(define (tcp-accept-evt listener)
  (check-listener 'tcp-accept-evt listener)
  (define custodian (current-daemon-custodian 'tcp-accept-evt))
  (broker-evt (hasheq 'tcp_accept (fields 'listener (tcp-listener-handle listener)
                                          'custodian (opt custodian)))
              (λ (result)
                (define-values (in out) (ports-of (hash-ref result 'connection)))
                (list in out))))

(define (tcp-port? v) (and (port? v) (port-handle v) #t))

(define (tcp-abandon-port p)
  (check 'tcp-abandon-port port? "tcp-port?" p)
  (cond [(tcp-port? p) (abandon-port! p)]
        [(input-port? p) (close-input-port p)] ; as Racket 8.7 does with another kind of port
        [else (close-output-port p)]))

(define (tcp-addresses p [port-numbers? #f])
  (define h (cond [(tcp-listener? p) (tcp-listener-handle p)]
                  [(udp? p) (udp-handle p)]
                  [(tcp-port? p) (port-handle p)]
                  [else (raise-argument-error 'tcp-addresses "(or/c tcp-port? tcp-listener? udp?)" p)]))
  (define reply
    (call "GET" (format "/v1/handles/~a/addresses?port_numbers=~a" h (if port-numbers? "true" "false"))))
  (if port-numbers?
      (values (hash-ref reply 'local_host) (hash-ref reply 'local_port)
              (hash-ref reply 'remote_host) (hash-ref reply 'remote_port))
      (values (hash-ref reply 'local_host) (hash-ref reply 'remote_host))))
