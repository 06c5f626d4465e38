#lang racket/base
;; sockbroker: racket/tcp and racket/udp over the broker, in one require.
(require "tcp.rkt" "udp.rkt")
(provide (all-from-out "tcp.rkt" "udp.rkt"))
