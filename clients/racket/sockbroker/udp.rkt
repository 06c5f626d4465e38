#lang racket/base
;; sockbroker/udp: every binding of racket/udp, over the broker's sockets.
;; Swap `(require racket/udp)` for `(require sockbroker/udp)`; see README.md for what differs.
(require "private/broker.rkt"
         "private/check.rkt"
         "private/evt.rkt"
         "private/udp-struct.rkt"
         (only-in "tcp.rkt" tcp-addresses))

(provide udp-open-socket udp-bind! udp-connect!
         udp-send-to udp-send udp-send-to* udp-send* udp-send-to/enable-break udp-send/enable-break
         udp-receive! udp-receive!* udp-receive!/enable-break
         udp-set-receive-buffer-size! udp-close udp? udp-bound? udp-connected?
         udp-send-ready-evt udp-receive-ready-evt udp-send-to-evt udp-send-evt udp-receive!-evt
         udp-addresses udp-set-ttl! udp-ttl
         udp-multicast-join-group! udp-multicast-leave-group!
         udp-multicast-interface udp-multicast-set-interface!
         udp-multicast-set-loopback! udp-multicast-loopback?
         udp-multicast-set-ttl! udp-multicast-ttl)

(define (string-or-false? v) (or (not v) (string? v)))
(define (mutable-bytes? v) (and (bytes? v) (not (immutable? v))))

(define (path-of u [tail ""]) (format "/v1/udp/sockets/~a~a" (udp-handle u) tail))
(define (check-udp who u) (check who udp? "udp?" u))

(define (udp-open-socket [family-hostname #f] [family-port-no #f])
  (check 'udp-open-socket string-or-false? "(or/c string? #f)" family-hostname)
  (check 'udp-open-socket (λ (v) (or (not v) (port-number? v))) "(or/c port-number? #f)" family-port-no)
  (define custodian (current-daemon-custodian 'udp-open-socket))
  (udp (hash-ref (call "POST" "/v1/udp/sockets"
                       (fields 'family_hostname (opt family-hostname) 'family_port (opt family-port-no)
                               'custodian (opt custodian)))
                 'udp)))

(define (udp-bind! u hostname port-no [reuse? #f])
  (check-udp 'udp-bind! u)
  (check 'udp-bind! string-or-false? "(or/c string? #f)" hostname)
  (check 'udp-bind! listen-port-number? "listen-port-number?" port-no)
  (call "POST" (path-of u "/bind") (fields 'hostname (opt hostname) 'port port-no 'reuse (and reuse? #t)))
  (void))

(define (udp-connect! u hostname port-no)
  (check-udp 'udp-connect! u)
  (check 'udp-connect! string-or-false? "(or/c string? #f)" hostname)
  (check 'udp-connect! (λ (v) (or (not v) (port-number? v))) "(or/c port-number? #f)" port-no)
  (call "POST" (path-of u "/connect") (fields 'hostname (opt hostname) 'port (opt port-no)))
  (void))

;; ── sending ───────────────────────────────────────────────────────────────────────────────────
(define (send-body who u hostname port-no bstr start end)
  (check-udp who u)
  (when hostname
    (check who string? "string?" hostname)
    (check who port-number? "port-number?" port-no))
  (check who bytes? "bytes?" bstr)
  (check-range who bstr start end)
  (fields 'hostname (opt hostname) 'port (opt port-no) 'data (b64 (subbytes bstr start end))))

(define (send who u hostname port-no bstr start end #:wait? wait? #:enable-break? [eb? (break-enabled)])
  (define body (hash-set (send-body who u hostname port-no bstr start end) 'wait wait?))
  (define path (path-of u (if hostname "/send-to" "/send")))
  (define reply (if wait? (blocking-call "POST" path body #:enable-break? eb?) (call "POST" path body)))
  (if wait? (void) (hash-ref reply 'sent)))

(define (udp-send-to u hostname port-no bstr [start 0] [end (and (bytes? bstr) (bytes-length bstr))])
  (send 'udp-send-to u hostname port-no bstr start end #:wait? #t))
(define (udp-send u bstr [start 0] [end (and (bytes? bstr) (bytes-length bstr))])
  (send 'udp-send u #f #f bstr start end #:wait? #t))
(define (udp-send-to* u hostname port-no bstr [start 0] [end (and (bytes? bstr) (bytes-length bstr))])
  (send 'udp-send-to* u hostname port-no bstr start end #:wait? #f))
(define (udp-send* u bstr [start 0] [end (and (bytes? bstr) (bytes-length bstr))])
  (send 'udp-send* u #f #f bstr start end #:wait? #f))
(define (udp-send-to/enable-break u hostname port-no bstr [start 0]
                                  [end (and (bytes? bstr) (bytes-length bstr))])
  (send 'udp-send-to/enable-break u hostname port-no bstr start end #:wait? #t #:enable-break? #t))
(define (udp-send/enable-break u bstr [start 0] [end (and (bytes? bstr) (bytes-length bstr))])
  (send 'udp-send/enable-break u #f #f bstr start end #:wait? #t #:enable-break? #t))

;; ── receiving ─────────────────────────────────────────────────────────────────────────────────
(define (check-receive who u bstr start end)
  (check-udp who u)
  (check who mutable-bytes? "(and/c bytes? (not/c immutable?))" bstr)
  (check-range who bstr start end))

;; Copy a received datagram into bstr; the three results of udp-receive!.
(define (deliver bstr start datagram)
  (define data (unb64 (hash-ref datagram 'data #f)))
  (bytes-copy! bstr start data)
  (values (hash-ref datagram 'count) (hash-ref datagram 'host) (hash-ref datagram 'port)))

(define (receive who u bstr start end #:wait? wait? #:enable-break? [eb? (break-enabled)])
  (check-receive who u bstr start end)
  (define body (hasheq 'max (- end start) 'wait wait?))
  (define reply
    (if wait?
        (blocking-call "POST" (path-of u "/receive") body #:enable-break? eb?)
        (call "POST" (path-of u "/receive") body)))
  (if (hash-ref reply 'count #f)
      (deliver bstr start reply)
      (values #f #f #f)))

(define (udp-receive! u bstr [start 0] [end (and (bytes? bstr) (bytes-length bstr))])
  (receive 'udp-receive! u bstr start end #:wait? #t))
(define (udp-receive!* u bstr [start 0] [end (and (bytes? bstr) (bytes-length bstr))])
  (receive 'udp-receive!* u bstr start end #:wait? #f))
(define (udp-receive!/enable-break u bstr [start 0] [end (and (bytes? bstr) (bytes-length bstr))])
  (receive 'udp-receive!/enable-break u bstr start end #:wait? #t #:enable-break? #t))

;; ── state and options ─────────────────────────────────────────────────────────────────────────
(define (describe u) (call "GET" (format "/v1/handles/~a" (udp-handle u))))

(define (udp-bound? u) (check-udp 'udp-bound? u) (and (hash-ref (describe u) 'bound #f) #t))
(define (udp-connected? u) (check-udp 'udp-connected? u) (and (hash-ref (describe u) 'connected #f) #t))

(define (udp-close u)
  (check-udp 'udp-close u)
  (call "DELETE" (path-of u))
  (void))

(define (udp-set-receive-buffer-size! u size)
  (check-udp 'udp-set-receive-buffer-size! u)
  (check 'udp-set-receive-buffer-size! exact-positive-integer? "exact-positive-integer?" size)
  (call "PUT" (path-of u "/receive-buffer-size") (hasheq 'size size))
  (void))

;; A property of the socket: a getter and a setter over GET / PUT of one route.
(define-syntax-rule (define-property getter setter tail member ok? expected)
  (begin
    (define (getter u)
      (check-udp 'getter u)
      (hash-ref (call "GET" (path-of u tail)) 'member))
    (define (setter u v)
      (check-udp 'setter u)
      (check 'setter ok? expected v)
      (call "PUT" (path-of u tail) (hasheq 'member v))
      (void))))

(define-property udp-ttl udp-set-ttl! "/ttl" ttl byte? "byte?")
(define-property udp-multicast-ttl udp-multicast-set-ttl! "/multicast/ttl" ttl byte? "byte?")
(define-property udp-multicast-interface udp-multicast-set-interface! "/multicast/interface" interface
  string-or-false? "(or/c string? #f)")

(define (udp-multicast-loopback? u)
  (check-udp 'udp-multicast-loopback? u)
  (and (hash-ref (call "GET" (path-of u "/multicast/loopback")) 'loopback) #t))
(define (udp-multicast-set-loopback! u loopback?)
  (check-udp 'udp-multicast-set-loopback! u)
  (call "PUT" (path-of u "/multicast/loopback") (hasheq 'loopback (and loopback? #t)))
  (void))

(define (group who tail u addr hostname)
  (check-udp who u)
  (check who string? "string?" addr)
  (check who string-or-false? "(or/c string? #f)" hostname)
  (call "POST" (path-of u tail) (fields 'group addr 'interface (opt hostname)))
  (void))
(define (udp-multicast-join-group! u addr hostname)
  (group 'udp-multicast-join-group! "/multicast/join" u addr hostname))
(define (udp-multicast-leave-group! u addr hostname)
  (group 'udp-multicast-leave-group! "/multicast/leave" u addr hostname))

(define (udp-addresses u [port-numbers? #f])
  (check-udp 'udp-addresses u)
  (tcp-addresses u port-numbers?))

;; ── events ────────────────────────────────────────────────────────────────────────────────────
(define (ready-evt kind u)
  (define e (broker-evt (hasheq kind (hasheq 'udp (udp-handle u))) (λ (_) e)))
  e)

(define (udp-send-ready-evt u) (check-udp 'udp-send-ready-evt u) (ready-evt 'udp_send_ready u))
(define (udp-receive-ready-evt u) (check-udp 'udp-receive-ready-evt u) (ready-evt 'udp_receive_ready u))

(define (udp-send-to-evt u hostname port-no bstr [start 0] [end (and (bytes? bstr) (bytes-length bstr))])
  (define body (send-body 'udp-send-to-evt u hostname port-no bstr start end))
  (broker-evt (hasheq 'udp_send_to (hash-set body 'udp (udp-handle u))) void))

(define (udp-send-evt u bstr [start 0] [end (and (bytes? bstr) (bytes-length bstr))])
  (define body (send-body 'udp-send-evt u #f #f bstr start end))
  (broker-evt (hasheq 'udp_send (hash-set body 'udp (udp-handle u))) void))

(define (udp-receive!-evt u bstr [start 0] [end (and (bytes? bstr) (bytes-length bstr))])
  (check-receive 'udp-receive!-evt u bstr start end)
  (broker-evt (hasheq 'udp_receive (hasheq 'udp (udp-handle u) 'max (- end start)))
              (λ (result)
                (call-with-values (λ () (deliver bstr start (hash-ref result 'datagram))) list))))
