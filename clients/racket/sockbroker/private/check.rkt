#lang racket/base
;; Argument checks, raised as Racket's own contract errors before anything reaches the daemon.
(provide check
         check-range
         port-number?
         listen-port-number?)

(define (port-number? v) (and (exact-integer? v) (<= 1 v 65535)))
(define (listen-port-number? v) (and (exact-integer? v) (<= 0 v 65535)))

;; (check who ok? expected value): a contract violation naming `expected`, as Racket's own.
(define (check who ok? expected v)
  (unless (ok? v) (raise-argument-error who expected v)))

;; start/end for a byte string, as racket/udp checks them.
(define (check-range who bstr start end)
  (check who exact-nonnegative-integer? "exact-nonnegative-integer?" start)
  (check who exact-nonnegative-integer? "exact-nonnegative-integer?" end)
  (define len (bytes-length bstr))
  (unless (<= start len)
    (raise-range-error who "byte string" "starting " start bstr 0 len))
  (unless (<= start end len)
    (raise-range-error who "byte string" "ending " end bstr start len 0)))
