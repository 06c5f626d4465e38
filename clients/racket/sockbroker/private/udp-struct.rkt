#lang racket/base
;; The UDP socket value, shared by sockbroker/udp and sockbroker/tcp (tcp-addresses takes one).
(provide (struct-out udp))

(struct udp (handle)
  #:property prop:custom-write
  (λ (self out mode) (write-string "#<udp>" out)))
