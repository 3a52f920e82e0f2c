-- Redis baseline (SPEC §6): check stock, DECR it, XADD the order — one atomic script.
local s = tonumber(redis.call('GET', KEYS[1]) or '0')
if s <= 0 then return 0 end
redis.call('DECR', KEYS[1])
redis.call('XADD', KEYS[2], '*', 'order', ARGV[1])
return 1
