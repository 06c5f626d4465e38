#lang racket/base
;; The bindings of racket/tcp and racket/udp (the seed's list), and `impl`, which gathers the
;; ones in scope where it is used into a table, so one behaviour module runs over either library.
(require (for-syntax racket/base))

(provide impl
         with-impl
         (for-syntax binding-names))

(begin-for-syntax
  (define binding-names
    '(tcp-listen tcp-connect tcp-connect/enable-break tcp-accept tcp-accept/enable-break
      tcp-accept-ready? tcp-close tcp-listener? tcp-accept-evt tcp-abandon-port tcp-addresses
      tcp-port? port-number? listen-port-number?
      udp-open-socket udp-bind! udp-connect! udp-send-to udp-send udp-send-to* udp-send*
      udp-send-to/enable-break udp-send/enable-break udp-receive! udp-receive!*
      udp-receive!/enable-break udp-set-receive-buffer-size! udp-close udp? udp-bound?
      udp-connected? udp-send-ready-evt udp-receive-ready-evt udp-send-to-evt udp-send-evt
      udp-receive!-evt udp-addresses udp-set-ttl! udp-ttl udp-multicast-join-group!
      udp-multicast-leave-group! udp-multicast-interface udp-multicast-set-interface!
      udp-multicast-set-loopback! udp-multicast-loopback? udp-multicast-set-ttl!
      udp-multicast-ttl)))

;; (impl) → a hasheq from each binding name to the binding of that name where `impl` is used.
(define-syntax (impl stx)
  (syntax-case stx ()
    [(_)
     (with-syntax ([(name ...) (for/list ([n binding-names]) (datum->syntax stx n))])
       #'(make-immutable-hasheq (list (cons 'name name) ...)))]))

;; (with-impl table body ...) binds every name to its entry in `table` around body.
(define-syntax (with-impl stx)
  (syntax-case stx ()
    [(_ table body ...)
     (with-syntax ([(name ...) (for/list ([n binding-names]) (datum->syntax stx n))])
       #'(let ([t table]) (let ([name (hash-ref t 'name)] ...) body ...)))]))
