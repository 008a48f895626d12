-- Every tsilo KEMI export, picked by the REGISTER's X-Kemi header; the return code is logged as
-- "kemi[X-Tag] rc=N" (tests/kemi.rs). INVITEs: ts_store() or ts_store_uri(X-Store-Uri).

local function hdr(name)
	return KSR.pv.get("$hdr(" .. name .. ")")
end

local function on_register()
	if KSR.registrar.save("location", 0) < 0 then
		KSR.sl.sl_reply_error()
		return
	end
	local f, tu = hdr("X-Kemi"), KSR.pv.get("$tu")
	if f == nil then
		return
	end
	local index, label = tonumber(hdr("X-Tindex") or "0"), tonumber(hdr("X-Tlabel") or "0")
	local rc
	if f == "ts_append" then
		rc = KSR.tsilo.ts_append("location", tu)
	elseif f == "ts_append_empty_table" then
		rc = KSR.tsilo.ts_append("", tu)
	elseif f == "ts_append_to" then
		rc = KSR.tsilo.ts_append_to(index, label, "location")
	elseif f == "ts_append_to_uri" then
		rc = KSR.tsilo.ts_append_to_uri(index, label, "location", hdr("X-Uri"))
	elseif f == "ts_append_by_contact" then
		rc = KSR.tsilo.ts_append_by_contact("location", tu)
	elseif f == "ts_append_by_contact_uri" then
		rc = KSR.tsilo.ts_append_by_contact_uri("location", tu, hdr("X-Contact"))
	elseif f == "ts_append_branches" then
		KSR.corex.append_branch_uri(hdr("X-Contact"))
		rc = KSR.tsilo.ts_append_branches(tu)
	end
	KSR.log("notice", "kemi[" .. (hdr("X-Tag") or "") .. "] rc=" .. tostring(rc) .. "\n")
end

-- Kamailio 6.1's TM no longer matches replies of a transaction that is over (tm modparam
-- reply_matching): the late 487 of a device cancelled after another answered would reach the
-- caller statelessly, after its 200. Earlier versions absorb it in TM; this is right for all.
function ksr_reply_route()
	if KSR.pv.get("$rs") >= 300 and KSR.tm.t_check_trans() < 0 then
		KSR.x.drop()
	end
end

function ksr_request_route()
	if KSR.is_CANCEL() then
		if KSR.tm.t_check_trans() > 0 then
			KSR.tm.t_relay()
		end
		return
	end
	if KSR.siputils.has_totag() > 0 then
		if KSR.rr.loose_route() > 0 or (KSR.is_ACK() and KSR.tm.t_check_trans() > 0) then
			KSR.tm.t_relay()
		end
		return
	end
	if KSR.is_REGISTER() then
		on_register()
		return
	end
	KSR.tm.t_newtran()
	local uri = hdr("X-Store-Uri")
	local rc
	if uri == nil then
		rc = KSR.tsilo.ts_store()
	else
		rc = KSR.tsilo.ts_store_uri(uri)
	end
	KSR.log("notice", "store rc=" .. tostring(rc) .. "\n")
	if KSR.registrar.lookup("location") < 0 then
		KSR.tm.t_reply(404, "Not Found")
		return
	end
	KSR.tm.t_relay()
end
