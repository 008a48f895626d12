-- Late parallel forking with tsilo, in Lua (KEMI): the flow of examples/kamailio.cfg.
-- INVITE/MESSAGE: ts_store, then relay + push if a device is registered, else push + t_suspend.
-- REGISTER: save, then resume a suspended call (t_continue) or ts_append to stored ones.

local FLT_EXIT = 0

function ksr_request_route()
	if KSR.maxfwd.process_maxfwd(10) < 0 then
		KSR.sl.sl_send_reply(483, "Too Many Hops")
		return
	end
	local method = KSR.pv.get("$rm")
	if method == "OPTIONS" and KSR.pv.is_null("$rU") then
		KSR.sl.sl_send_reply(200, "OK")
		return
	end
	if method == "CANCEL" then
		if KSR.tm.t_check_trans() > 0 then KSR.tm.t_relay() end
		return
	end
	if KSR.siputils.has_totag() > 0 then
		if KSR.rr.loose_route() > 0 then
			KSR.tm.t_relay()
		elseif method == "ACK" and KSR.tm.t_check_trans() > 0 then
			KSR.tm.t_relay()
		end
		return
	end
	if method == "REGISTER" then return ksr_route_register() end
	if method == "INVITE" or method == "MESSAGE" then return ksr_route_call(method) end
	KSR.sl.sl_send_reply(405, "Method Not Allowed")
end

function ksr_route_register()
	if KSR.registrar.save("location", 0) < 0 then
		KSR.sl.sl_reply_error()
		return
	end
	local user = KSR.pv.get("$tU")
	-- Take the waiting call, if any, under a lock: only one device may resume it.
	KSR.cfgutils.lock(user)
	local waiting = KSR.htable.sht_get("suspended", user)
	if waiting then KSR.htable.sht_rm("suspended", user) end
	KSR.cfgutils.unlock(user)
	if waiting then
		local tindex, tlabel = string.match(waiting, "(%d+):(%d+)")
		KSR.info("REGISTER " .. user .. ": resuming call " .. waiting .. "\n")
		if KSR.tmx.t_continue(tonumber(tindex), tonumber(tlabel), "ksr_route_resume") > 0 then
			return
		end
		-- Gone meanwhile (the caller hung up): calls still stored get the device below.
		KSR.notice("REGISTER " .. user .. ": call " .. waiting .. " could not be resumed\n")
	end
	-- Calls already ringing other devices: add a branch to this one. -2: none stored.
	local rc = KSR.tsilo.ts_append("location", KSR.pv.get("$tu"))
	if rc < 0 and rc ~= -2 then
		KSR.warn("REGISTER " .. user .. ": ts_append failed (" .. rc .. ")\n")
	end
end

function ksr_route_call(method)
	if method == "INVITE" then KSR.rr.record_route() end
	-- Store first: before lookup() the key is the called user, and before t_relay() a device
	-- that registers right away already finds the call.
	local rc = KSR.tm.t_newtran()
	if rc == 0 then return end -- a retransmission: TM has answered it
	if rc < 0 then
		KSR.sl.sl_reply_error()
		return
	end
	-- Not stored: devices reachable now still ring, late ones will not.
	if KSR.tsilo.ts_store() < 0 then
		KSR.warn(method .. " to " .. KSR.pv.get("$tU") .. ": ts_store failed\n")
	end
	if KSR.registrar.lookup("location") > 0 then
		if KSR.tm.t_relay() < 0 then
			KSR.tm.t_reply(500, "Relay Failed")
			return
		end
		push()
		return
	end
	if not push() then
		KSR.tm.t_reply(480, "Temporarily Unavailable (push failed)")
		return
	end
	if KSR.tmx.t_suspend() < 0 then
		KSR.tm.t_reply(500, "Cannot Suspend")
		return
	end
	local user = KSR.pv.get("$tU")
	KSR.cfgutils.lock(user)
	KSR.htable.sht_sets("suspended", user, KSR.pv.get("$T(id_index)") .. ":" .. KSR.pv.get("$T(id_label)"))
	KSR.cfgutils.unlock(user)
end

-- Asks the push gateway to wake the callee's devices; false when it fails.
function push()
	local body = string.format('{"user":"%s","from":"%s","call_id":"%s"}',
		KSR.pv.get("$tU"), KSR.pv.get("$fU"), KSR.pv.get("$ci"))
	local code = KSR.http_client.query_post_hdrs(KSR.pv.get("$shv(push_url)"), body,
		"Content-Type: application/json", "$var(push)")
	if code < 200 or code > 299 then
		KSR.warn("push for " .. KSR.pv.get("$tU") .. " failed (HTTP " .. code .. ")\n")
		return false
	end
	return true
end

-- A REGISTER resumed a suspended call (t_continue): relay it (it is stored already).
function ksr_route_resume()
	if KSR.registrar.lookup("location") < 0 then
		KSR.tm.t_reply(480, "Temporarily Unavailable")
		return
	end
	if KSR.tm.t_relay() < 0 then
		KSR.tm.t_reply(500, "Relay Failed")
	end
end
