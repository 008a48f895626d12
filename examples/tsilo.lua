-- Late parallel forking with tsilo, in Lua (KEMI): the flow of examples/kamailio.cfg (RFC 8599).
-- REGISTER: save (devices with pn-provider/pn-prid in "location_pn", the others in "location";
--   the same device from a new address replaces its old binding), then append a branch to the
--   calls stored for the user (ts_append*; a suspended one goes on in ksr_route_resume, tsilo's
--   resume_route).
-- INVITE/MESSAGE: ts_store; relay to devices without pn parameters; one push per device with
--   them; nobody reachable: t_suspend until one registers; nobody reachable or pushed: 480.

local FLT_EXIT = 0

-- Kamailio 6.1's TM no longer matches replies of a transaction that is over (tm modparam
-- reply_matching): the late 487 of a device cancelled after another answered would reach the
-- caller statelessly, after its 200. Earlier versions absorb it in TM; this is right for all.
function ksr_reply_route()
	if KSR.pv.get("$rs") >= 300 and KSR.tm.t_check_trans() < 0 then
		KSR.x.drop()
	end
end

function ksr_request_route()
	woken = nil -- per request: the device ksr_route_register appends for
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

-- A parameter of a SIP URI ("" when absent); `name` is a Lua pattern ("pn%-prid").
local function uri_param(uri, name)
	return string.match(uri, ";" .. name .. "=([^;>]*)") or ""
end

-- The device this process's REGISTER appends for (ksr_route_resume relays a suspended call to it).
woken = nil

function ksr_route_register()
	local user = KSR.pv.get("$tU")
	local contact = KSR.pv.get("$(ct{nameaddr.uri})") or ""
	local prid = uri_param(contact, "pn%-prid")
	local table = "location"
	if uri_param(contact, "pn%-provider") ~= "" and prid ~= "" then
		table = "location_pn"
		-- Same device (pn-prid) from a new address without +sip.instance: drop its old binding
		-- (with an instance, the registrar matches it and replaces it itself).
		local ct = KSR.hdr.get("Contact") or ""
		if not string.find(ct, "+sip.instance", 1, true) and KSR.hdr.get("Expires") ~= "0" then
			replace_by_prid(user, contact, prid)
		end
	end
	if KSR.registrar.save(table, 0) < 0 then
		KSR.sl.sl_reply_error()
		return
	end
	-- Unregistering, or only asking for the bindings: nothing rings.
	local ct = KSR.hdr.get("Contact") or ""
	if contact == "" or KSR.hdr.get("Expires") == "0" or string.find(ct, ";%s*expires=0%f[^%d]") then
		return
	end
	woken = contact
	KSR.htable.sht_sets("woken", user, contact)
	-- Calls already ringing other devices: add a branch to this one (a suspended call goes on in
	-- ksr_route_resume). A pushed device gets only its own new binding (the other pushed
	-- devices' are stale until they register). -2: none.
	local rc
	if table == "location_pn" then
		rc = KSR.tsilo.ts_append_by_contact_uri("location_pn", KSR.pv.get("$tu"), contact)
	else
		rc = KSR.tsilo.ts_append("location", KSR.pv.get("$tu"))
	end
	if rc < 0 and rc ~= -2 then
		KSR.warn("REGISTER " .. user .. ": ts_append failed (" .. rc .. ")\n")
	end
end

-- Removes the bindings of the registering device (same pn-prid) at another address.
function replace_by_prid(user, contact, prid)
	if KSR.registrar.reg_fetch_contacts("location_pn", KSR.pv.get("$tu"), "old") < 0 then return end
	for i = 0, (KSR.pv.get("$(ulc(old=>count))") or 0) - 1 do
		local addr = KSR.pv.get("$(ulc(old=>addr)[" .. i .. "])") or ""
		if uri_param(addr, "pn%-prid") == prid and addr ~= contact then
			KSR.info("REGISTER " .. user .. ": device " .. prid .. " moved, dropping its binding " .. addr .. "\n")
			KSR.registrar.unregister_ruid("location_pn", KSR.pv.get("$tu"), KSR.pv.get("$(ulc(old=>ruid)[" .. i .. "])"))
		end
	end
	KSR.registrar.reg_free_contacts("old")
end

function ksr_route_call(method)
	if method == "INVITE" then KSR.rr.record_route() end
	local aor = "sip:" .. KSR.pv.get("$rU") .. "@" .. KSR.pv.get("$rd")
	local rc = KSR.tm.t_newtran()
	if rc == 0 then return end -- a retransmission: TM has answered it
	if rc < 0 then
		KSR.sl.sl_reply_error()
		return
	end
	-- Store first: before lookup() the key is the called user, and before t_relay() a device
	-- that registers right away already finds the call. Not stored: devices reachable now still
	-- ring, late ones will not.
	if KSR.tsilo.ts_store() < 0 then
		KSR.warn(method .. " to " .. KSR.pv.get("$tU") .. ": ts_store failed\n")
	end
	-- The devices reachable now (no pn parameters).
	if KSR.registrar.lookup("location") > 0 then
		if KSR.tm.t_relay() < 0 then
			KSR.tm.t_reply(500, "Relay Failed")
			return
		end
		push(aor) -- wake the others; each one's REGISTER appends a branch
		return
	end
	-- Nobody reachable: push, and hold the call until the first device registers.
	if push(aor) == 0 then
		KSR.tm.t_reply(480, "Temporarily Unavailable")
		return
	end
	-- It is stored: the first device's REGISTER resumes it (resume_route).
	if KSR.tmx.t_suspend() < 0 then
		KSR.tm.t_reply(500, "Cannot Suspend")
	end
end

-- A string for a JSON string literal: quotes, backslashes and control characters escaped.
local function json(v)
	return (tostring(v or ""):gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end))
end

-- One push per device of `aor` with pn parameters; returns how many the gateway accepted.
function push(aor)
	local pushed = 0
	if KSR.registrar.reg_fetch_contacts("location_pn", aor, "pn") < 0 then return 0 end
	for i = 0, (KSR.pv.get("$(ulc(pn=>count))") or 0) - 1 do
		local addr = KSR.pv.get("$(ulc(pn=>addr)[" .. i .. "])") or ""
		local provider, prid = uri_param(addr, "pn%-provider"), uri_param(addr, "pn%-prid")
		local body = string.format('{"user":"%s","from":"%s","call_id":"%s","provider":"%s","prid":"%s","param":"%s"}',
			KSR.pv.get("$rU"), json(KSR.pv.get("$fU")), json(KSR.pv.get("$ci")), provider, prid, uri_param(addr, "pn%-param"))
		local code = KSR.http_client.query_post_hdrs(KSR.pv.get("$shv(push_url)"), body,
			"Content-Type: application/json", "$var(push)")
		if code >= 200 and code <= 299 then
			pushed = pushed + 1
			KSR.info("push sent for " .. KSR.pv.get("$rU") .. " to " .. provider .. " device " .. prid .. "\n")
		else
			KSR.warn("push for " .. KSR.pv.get("$rU") .. " to device " .. prid .. " failed (HTTP " .. code .. ")\n")
		end
	end
	KSR.registrar.reg_free_contacts("pn")
	return pushed
end

-- tsilo's resume_route: a device's REGISTER appended to a suspended call; relay it to that
-- device. Usually in the REGISTER's own process (`woken`); if that REGISTER came while the call's
-- route was still running (pushing), when that route ends, in its process (the htable).
function ksr_route_resume()
	local to = woken or KSR.htable.sht_get("woken", KSR.pv.get("$rU"))
	if not to or to == "" then
		KSR.tm.t_reply(480, "Temporarily Unavailable")
		return
	end
	KSR.pv.sets("$ru", to)
	if KSR.tm.t_relay() < 0 then
		KSR.tm.t_reply(500, "Relay Failed")
	end
end
